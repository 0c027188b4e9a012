"""Command-line entry point ``fusmae-fast``.

Each subcommand lives in the module that implements it. A command module provides
``add_arguments(parser: argparse.ArgumentParser) -> None`` and ``run(args: argparse.Namespace) -> int``;
the table below maps a subcommand name to ``(module, one-line help)``. Modules are imported only when
their subcommand runs (``--help`` of the top level imports nothing heavy). Before a command runs,
glibc's malloc is told to keep freed memory for reuse (``fusmae_fast.host_allocator``; opt out with
``FUSMAE_FAST_HOST_ALLOCATOR=system``), and the library's own warnings are printed as one line each
(``fusmae-fast <command>: warning: ...``), like its errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from fusmae_fast.host_allocator import keep_freed_memory

COMMANDS: dict[str, tuple[str, str]] = {}


def _register(name: str, module: str, help_text: str) -> None:
    COMMANDS[name] = (module, help_text)


_register("pretrain", "fusmae_fast.pretrain", "Pretrain Fus-MAE (single process or under torchrun).")
_register(
    "eval", "fusmae_fast.evaluate", "Linear probe, fine-tuning or SEN12MS transfer of a pretrained encoder."
)
_register("embed", "fusmae_fast.embed", "Embeddings of a dataset by a pretrained encoder, as GeoParquet.")
_register("convert", "fusmae_fast.data.convert", "Pack a dataset into the fast memory-mapped store.")
_register("verify", "fusmae_fast.data.verify", "Check every file of a packed store against its checksums.")
_register("sample-data", "fusmae_fast.data.sample_data", "Write a synthetic dataset in a real layout.")
_register("reconstruct", "fusmae_fast.reconstruct", "Reconstruction figure of a training checkpoint.")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the ``selected`` subcommand's module is imported to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="fusmae-fast", description="Fus-MAE: pretraining, evaluation, data."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in COMMANDS:
        selected = None
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    keep_freed_memory()
    one_line_warnings(args.command)
    module = importlib.import_module(COMMANDS[args.command][0])
    return run_reporting_errors(args.command, module.run, args)


PACKAGE_DIR = Path(__file__).resolve().parent
_PYTHON_SHOWWARNING = warnings.showwarning


def one_line_warnings(command: str) -> None:
    """Warnings raised from this package print as ``fusmae-fast <command>: warning: <message>`` on
    stderr (no source line); other libraries' warnings keep Python's format."""

    def show(message, category, filename, lineno, file=None, line=None):
        if Path(filename).resolve().is_relative_to(PACKAGE_DIR):
            print(f"fusmae-fast {command}: warning: {message}", file=file or sys.stderr)
        else:
            _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def run_reporting_errors(
    command: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """``run(args)``; bad input, missing files, unsupported settings (ValueError, OSError,
    NotImplementedError) become one clear line and exit status 2, not a traceback."""
    try:
        return int(run(args) or 0)
    except (ValueError, OSError, NotImplementedError) as exc:
        if os.environ.get("FUSMAE_DEBUG"):
            raise
        print(f"fusmae-fast {command}: error: {exc}", file=sys.stderr)
        print("(set FUSMAE_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
