"""``fusmae-fast verify STORE``: check every file of a packed store against its index.

Each array file (those of the index's side sections, georeference and S1 names, when the store has
them) is checked for its header and size, then every byte is hashed and compared with the sha256 the
convert recorded (see :mod:`fusmae_fast.data.store`). One line per file on stdout (``ok``)
or stderr (``BAD``, with what is wrong), then a verdict. Exit status:

- 0: every file matches the index;
- 1: some files are bad (each listed): convert the store again (``--overwrite``);
- 3: sizes and headers are right but the index records no checksums (a store written by an older
  convert), so the contents could not be verified.

Errors that stop before any file is checked (not a store, unreadable index) are one line, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fusmae_fast.data.store import read_index, verify_arrays

UNVERIFIABLE = 3
"""Exit status of a store whose index records no checksums."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="the packed store folder (holds index.json)")
    p.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="threads hashing chunks side by side (default: min(8, CPUs))",
    )


def run(args: argparse.Namespace) -> int:
    root = Path(args.store)
    index = read_index(root)
    workers = max(1, args.workers)
    results, unchecked = verify_arrays(root, index, workers=workers)  # side sections' arrays included
    bad = {file: problem for file, problem in results.items() if problem is not None}
    for file, problem in results.items():
        if problem is None:
            print(f"ok   {root / file}" + (" (size only: no checksum recorded)" if file in unchecked else ""))
        else:
            print(f"BAD  {root / file}: {problem}", file=sys.stderr)
    if bad:
        print(
            f"fusmae-fast verify: {len(bad)} of {len(results)} file(s) of {root} are bad: {', '.join(bad)}; "
            "convert the store again (--overwrite)",
            file=sys.stderr,
        )
        return 1
    if unchecked:
        print(
            f"fusmae-fast verify: {root} has no checksums in its index for {', '.join(unchecked)} (written "
            "by an older convert): sizes and headers are right, contents not verified; convert again to "
            "add them",
            file=sys.stderr,
        )
        return UNVERIFIABLE
    print(f"{root}: all {len(results)} files match the checksums in its index")
    return 0
