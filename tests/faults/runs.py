"""Running ``fusmae-fast`` as a user does, for the fault tests: in this process (fast) or as a child
process (to kill it), with the tiny preset on the built-in sample."""

import contextlib
import io
import os
import subprocess
import sys
import warnings

from fusmae_fast.cli import main

TINY = ["--preset", "tiny", "--num_workers", "0", "--no-progress"]
"""Flags every test run takes (the built-in sample is the data)."""


def pretrain_args(out, *extra):
    """``pretrain`` on the built-in sample into ``out``: batches of 8, one warm-up epoch, 2 epochs."""
    fixed = ["--batch_size", "8", "--epochs", "2", "--warmup_epochs", "1", "--output_dir", str(out)]
    return ["pretrain", *TINY, *fixed, *map(str, extra)]


def cli(args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``fusmae-fast ARGS`` run in this process (see ``in_process``)."""
    proc = in_process(args)
    return proc.returncode, proc.stdout, proc.stderr


def in_process(args) -> subprocess.CompletedProcess[str]:
    """``fusmae-fast ARGS`` through the CLI's ``main`` in this process, its exit status and output as a
    finished process's (no fixtures needed; a fresh process per call would spend most of a short test
    importing torch). An exception main does not turn into an error line propagates."""
    args = [str(a) for a in args]
    stdout, stderr = io.StringIO(), io.StringIO()
    debug, showwarning = os.environ.pop("FUSMAE_DEBUG", None), warnings.showwarning
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = main(args)
    finally:
        warnings.showwarning = showwarning  # main installs its one-line warnings
        if debug is not None:
            os.environ["FUSMAE_DEBUG"] = debug
    return subprocess.CompletedProcess(["fusmae-fast", *args], rc, stdout.getvalue(), stderr.getvalue())


def child(args, **kw):
    """``fusmae-fast ARGS`` as a child process (Popen; stdout and stderr piped)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FUSMAE_DEBUG", None)
    code = "import sys; from fusmae_fast.cli import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def one_line_error(err):
    """True when stderr holds an error line and no traceback."""
    return "Traceback" not in err and "error" in err.lower()


class Overflowing:
    """A dataset whose S2 images are scaled by 1e30: finite, but every loss overflows to NaN/Inf."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = dict(self.base[i])
        item["s2"] = item["s2"] * 1e30
        return item
