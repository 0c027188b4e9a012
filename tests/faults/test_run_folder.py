"""Issue 13, item 8: the run folder after a kill. A resumed run logs each step once (log.jsonl is cut
to the resumed step), temporary files of a killed save are removed, ``eval --ckpt RUN`` does not use
an encoder.safetensors older than the run's newest checkpoint; the NaN-input hint names real flags."""

import json
import signal
import subprocess
import sys
import time

import torch
from runs import child, cli, pretrain_args

from fusmae_fast import build_model, checkpoint


def _steps(run):
    return [r["step"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_kill_9_then_resume_logs_each_step_once(tmp_path):
    run = tmp_path / "run"
    args = pretrain_args(run, "--save_every", 2, "--log_every", 1, "--max_steps", 12)
    proc = child(args)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a checkpoint exists and a later step is logged
        ckpts = checkpoint.list_checkpoints(run / "checkpoints")
        logged = _steps(run) if (run / "log.jsonl").is_file() else []
        if ckpts and logged and max(logged) > checkpoint.step_of(ckpts[-1]):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    rc, out, err = cli([*args, "--resume", "auto"])
    assert rc == 0, err
    assert "log.jsonl: removed" in out and "written after step" in out
    assert _steps(run) == list(range(1, 13))
    events = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "event" in r]
    assert [e["event"] for e in events] == ["resumed"]


def test_temporary_files_of_a_save_killed_by_sigkill_are_removed(tmp_path):
    run = tmp_path / "run"
    # a real SIGKILL in the middle of a save: after the temporary file is written, before its rename
    kill_mid_save = (
        "import os, signal, sys; real = os.replace\n"
        "def replace(src, dst):\n"
        "    if str(dst).endswith('ckpt-00000002.pt'): os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(src, dst)\n"
        "os.replace = replace\n"
        "from fusmae_fast.cli import main; raise SystemExit(main(sys.argv[1:]))"
    )
    args = pretrain_args(run, "--save_every", 1, "--max_steps", 3)
    proc = subprocess.run(
        [sys.executable, "-c", kill_mid_save, *map(str, args)], capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL
    stale = list((run / "checkpoints").glob(".ckpt-*.tmp"))
    assert stale, sorted(p.name for p in (run / "checkpoints").iterdir())
    rc, out, err = cli([*args, "--resume", "auto"])
    assert rc == 0, err
    assert f"removed {len(stale)} temporary file(s) of interrupted saves" in out
    assert not list((run / "checkpoints").glob(".ckpt-*.tmp"))
    assert "resumed from" in out and "ckpt-00000001.pt" in out  # the last complete save


def test_eval_run_folder_with_a_stale_encoder_uses_the_newest_checkpoint(tmp_path):
    run = tmp_path / "run"
    rc, _, err = cli(pretrain_args(run, "--max_steps", 1))
    assert rc == 0, err
    encoder = (run / "encoder.safetensors").read_bytes()
    rc, _, err = cli(pretrain_args(run, "--max_steps", 2, "--resume", "auto"))
    assert rc == 0, err
    (run / "encoder.safetensors").write_bytes(encoder)  # as if killed before the new export
    (run / "checkpoints" / "ckpt-00000002.pt").touch()
    args = ["eval", "linear", "--ckpt", run, "--out", tmp_path / "eval", "--epochs", 1, "--inputs", "s1"]
    rc, _, err = cli([*args, "--num_workers", 0, "--no-progress"])
    assert rc == 0, err
    assert "encoder.safetensors (step 1) is older than ckpt-00000002.pt: evaluating the newest" in err


def test_nan_input_hint_names_real_flags():
    model = build_model("tiny")
    s1, s2 = torch.zeros(1, 2, 120, 120), torch.zeros(1, 12, 120, 120)
    s1[0, 0, 0, 0] = float("nan")
    try:
        model(s1, s2)
    except ValueError as exc:
        assert "fusmae-fast convert --nan-policy" in str(exc) and "nan_policy=" in str(exc)
    else:
        raise AssertionError("NaN input must be refused")
