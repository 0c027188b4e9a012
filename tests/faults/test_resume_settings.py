"""Issue 13, item 2: a resume with other settings. The checkpoint records what determines the run's
course; a resume that differs stops with one line listing every difference (exit 2, nothing
changed on disk); a longer run and changes of workers, logging or saving are allowed and said;
anything else only with ``--allow_changes``; a checkpoint without recorded settings still resumes."""

import io
import os

import torch
from runs import cli, one_line_error, pretrain_args

from fusmae_fast import checkpoint


def _first_run(run):
    rc, _, err = cli(pretrain_args(run, "--max_steps", 2))
    assert rc == 0, err
    return sorted(os.listdir(run / "checkpoints")), (run / "log.jsonl").read_text()


def _unchanged(run, before):
    names, log = before
    assert sorted(os.listdir(run / "checkpoints")) == names and (run / "log.jsonl").read_text() == log


def test_other_batch_size_is_refused_naming_every_difference(tmp_path):
    before = _first_run(tmp_path)
    args = pretrain_args(tmp_path, "--resume", "auto", "--batch_size", 16, "--seed", 3)
    rc, _, err = cli(args)
    assert rc == 2 and one_line_error(err)
    line = err.splitlines()[0]
    assert "ckpt-00000002.pt was written with other settings" in line
    for diff in ("batch_size 8 -> 16", "seed 0 -> 3", "lr "):
        assert diff in line, line
    assert "--allow_changes batch_size lr seed" in line
    _unchanged(tmp_path, before)


def test_other_preset_is_refused_without_a_traceback(tmp_path):
    before = _first_run(tmp_path)
    rc, _, err = cli(pretrain_args(tmp_path, "--resume", "auto", "--preset", "small"))
    assert rc == 2 and one_line_error(err)
    assert "preset 'tiny' -> 'small'" in err and "cannot change" in err
    rc, _, err = cli(
        pretrain_args(tmp_path, "--resume", "auto", "--preset", "small", "--allow_changes", "all"),
    )
    assert rc == 2 and "cannot change" in err  # the weights would not fit: no override
    _unchanged(tmp_path, before)


def test_other_data_is_refused(tmp_path):
    before = _first_run(tmp_path)
    args = pretrain_args(tmp_path, "--resume", "auto", "--data", "sample:sen12ms")
    rc, _, err = cli(args)
    assert rc == 2 and one_line_error(err)
    assert "data_kind 'bigearthnet' -> 'sen12ms'" in err and "data_length" in err
    _unchanged(tmp_path, before)


def test_allowed_changes_are_said(tmp_path):
    _first_run(tmp_path)
    args = pretrain_args(tmp_path, "--resume", "auto", "--max_steps", 3, "--epochs", 3, "--log_every", 5)
    rc, out, err = cli([*args, "--save_every", 7, "--keep_last", 2])
    assert rc == 0, err
    for said in (
        "epochs 2 -> 3",
        "log_every 10 -> 5",
        "save_every 0 -> 7",
        "keep_last 3 -> 2",
        "max_steps 2 -> 3",
    ):
        assert said in out, out


def test_override_flag_allows_a_change(tmp_path):
    _first_run(tmp_path)
    args = pretrain_args(tmp_path, "--resume", "auto", "--max_steps", 3, "--batch_size", 16)
    rc, out, err = cli([*args, "--allow_changes", "batch_size", "lr"])
    assert rc == 0, err
    assert "batch_size 8 -> 16 (allowed by --allow_changes)" in out
    # the place in the epoch is kept: 2 batches of 8 = 1 batch of 16, then one more step
    path, state = checkpoint.latest_valid(tmp_path / "checkpoints")
    assert state["step"] == 3 and state["iter_in_epoch"] == 2


def test_checkpoint_without_settings_still_resumes(tmp_path):
    _first_run(tmp_path)
    path = checkpoint.list_checkpoints(tmp_path / "checkpoints")[-1]
    state = torch.load(io.BytesIO(checkpoint.verify_checkpoint(path)), weights_only=False)
    del state["settings"]  # as written before settings were recorded
    checkpoint.save_checkpoint(tmp_path / "checkpoints", state["step"], state)
    rc, out, err = cli(pretrain_args(tmp_path, "--resume", "auto", "--max_steps", 3))
    assert rc == 0, err
    assert "records no settings (written by an older version): cannot check" in out
