"""Issue 13, item 3: divergence. No checkpoint is written from non-finite weights or optimizer state;
the checkpoints of the last steps before a non-finite loss are marked suspect and ``--resume auto``
passes over them (saying which and why); ``--on_nonfinite skip`` stops non-zero after ``--max_skips``
skips in a row; a run that took no optimizer step never exits 0."""

import json

import torch
from runs import Overflowing, cli, pretrain_args

from fusmae_fast import checkpoint
from fusmae_fast.pretrain import engine, setup


def _all_finite(state):
    return all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_lr_1e6_marks_the_checkpoint_before_the_nan_and_resume_auto_passes_over_it(tmp_path):
    run = tmp_path / "run"
    rc, _, err = cli(pretrain_args(run, "--save_every", 1, "--max_steps", 2))
    assert rc == 0, err
    # the user raises the lr far too high: one step explodes the weights (saved: finite), the next NaNs
    args = pretrain_args(run, "--save_every", 1, "--resume", "auto", "--lr", "1e6", "--allow_changes", "lr")
    rc, _, err = cli(args)
    assert rc == 3 and "Traceback" not in err
    assert "non-finite" in err and "Marked suspect: ckpt-00000003.pt" in err
    assert "--resume auto would start from ckpt-00000002.pt" in err
    side = json.loads((run / "checkpoints" / "ckpt-00000003.pt.json").read_text())
    assert "non-finite" in side["suspect"]
    for path in checkpoint.list_checkpoints(run / "checkpoints"):
        assert _all_finite(checkpoint.load_checkpoint(path)), path
    # back to the run's own settings: resume from the newest checkpoint that is not suspect
    rc, out, err = cli(pretrain_args(run, "--save_every", 1, "--resume", "auto", "--max_steps", 4))
    assert rc == 0, err
    assert "passing over checkpoint ckpt-00000003.pt: marked suspect (non-finite" in err
    assert (
        "resumed from" in out
        and "the newest checkpoint not marked suspect (passed over: ckpt-00000003.pt)" in out
    )
    path, state = checkpoint.latest_valid(run / "checkpoints")
    assert state["step"] == 4 and _all_finite(state)
    assert checkpoint.suspect_reason(run / "checkpoints" / "ckpt-00000003.pt") is None  # written over


def test_nonfinite_weights_are_never_saved(tmp_path, monkeypatch):
    real_step = engine.optimizer_step

    def step_then_poison(run, lr):  # an optimizer step that leaves a NaN weight (and a finite loss)
        real_step(run, lr)
        with torch.no_grad():
            run.model.norm.weight[0] = float("nan")

    monkeypatch.setattr(engine, "optimizer_step", step_then_poison)
    rc, _, err = cli(pretrain_args(tmp_path, "--save_every", 1))
    assert rc == 3 and "Traceback" not in err
    assert "non-finite weight norm.weight after optimizer step 1: checkpoint not written" in err
    assert checkpoint.list_checkpoints(tmp_path / "checkpoints") == []
    assert not (tmp_path / "encoder.safetensors").exists()


def test_skip_stops_after_max_skips_in_a_row(tmp_path):
    run = tmp_path / "run"
    args = pretrain_args(run, "--lr", "1e6", "--warmup_epochs", 0, "--on_nonfinite", "skip", "--max_skips", 3)
    rc, _, err = cli(args)
    assert rc == 3 and "Traceback" not in err
    assert "3 batches in a row had a non-finite loss" in err and "--max_skips 3" in err
    assert not (run / "encoder.safetensors").exists()  # no diverged encoder exported
    skipped = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert sum(r.get("event") == "skipped_nonfinite" for r in skipped) == 3


def test_a_run_without_an_optimizer_step_does_not_exit_0(tmp_path, monkeypatch):
    real_resolve = setup.resolve_dataset

    def overflowing(path, split, image_size=120):
        return Overflowing(real_resolve(path, split, image_size))

    monkeypatch.setattr(setup, "resolve_dataset", overflowing)
    args = pretrain_args(tmp_path / "run", "--on_nonfinite", "skip", "--max_skips", 100, "--max_steps", 1)
    rc, _, err = cli([*args, "--batch_size", 64, "--epochs", 1, "--recon_samples", 0])
    assert rc == 3 and "Traceback" not in err
    assert "no optimizer step was taken (4 batch(es) skipped" in err
    assert not (tmp_path / "run" / "encoder.safetensors").exists()
