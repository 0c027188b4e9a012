"""``fusmae-fast convert {bigearthnet-v1,bigearthnet-v2,sen12ms} ROOT --out DIR``: pack a dataset.

Packs every split the source defines (train, validation, test; or everything as 'all' for a v1 root
without split files) into one store; see :mod:`fusmae_fast.data.packing` for how the convert runs
in worker processes, resumes after an interruption (run the same command again) and verifies itself,
and :mod:`fusmae_fast.data.store` for the format.

Every patch must be listed once: a patch in two splits, a duplicated row, a missing file or an
empty split list stops the convert with one line naming the file and the patch. ``--skip-bad``
(for data known to be partly broken) leaves such patches out instead, records each with its reason
in the store's ``index.json`` (``skipped_patches``) and prints the count; see
:mod:`fusmae_fast.data.bad_patches` for what it covers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fusmae_fast.data.geotiff import NAN_POLICIES
from fusmae_fast.data.raw_dataset import RawDataset
from fusmae_fast.data.splits import SPLITS, canonical_split
from fusmae_fast.data.store import S1_DTYPES

SOURCES = ("bigearthnet-v1", "bigearthnet-v2", "sen12ms")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=SOURCES, help="format of the source dataset")
    p.add_argument("root", help="dataset root (v1: holds BigEarthNet-v1.0 and BigEarthNet-S1-v1.0)")
    p.add_argument("--out", required=True, help="output store folder")
    p.add_argument("--s2-root", "--s2_root", dest="s2_root", default=None, help="v1: S2 folder if elsewhere")
    p.add_argument("--s1-root", "--s1_root", dest="s1_root", default=None, help="v1: S1 folder if elsewhere")
    p.add_argument(
        "--split-file",
        "--split_file",
        dest="split_files",
        action="append",
        default=[],
        metavar="SPLIT=PATH",
        help="v1 / sen12ms: split list for a split (repeatable), e.g. train=splits/train.csv",
    )
    p.add_argument(
        "--exclude", action="append", default=None, help="v1: list of S2 names to leave out (repeatable)"
    )
    p.add_argument(
        "--keep-snow-cloud", action="store_true", help="v2: keep patches flagged as snowy or cloudy"
    )
    p.add_argument("--s1-dtype", "--s1_dtype", dest="s1_dtype", choices=S1_DTYPES, default="float32")
    p.add_argument("--nan-policy", "--nan_policy", dest="nan_policy", choices=NAN_POLICIES, default="error")
    p.add_argument("--workers", type=int, default=2, help="worker processes (0: in this process)")
    p.add_argument("--chunk-size", "--chunk_size", dest="chunk_size", type=int, default=64)
    p.add_argument("--verify-samples", "--verify_samples", dest="verify_samples", type=int, default=16)
    p.add_argument("--overwrite", action="store_true", help="replace a different store or partial convert")
    p.add_argument(
        "--skip-bad",
        "--skip_bad",
        dest="skip_bad",
        action="store_true",
        help="leave out patches listed twice, in two splits or with a missing file (each recorded in the "
        "store's index) instead of stopping at the first",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")


def _split_files(items: list[str]) -> dict[str, Path]:
    """``SPLIT=PATH`` options -> {canonical split: path}."""
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--split-file wants SPLIT=PATH, got {item!r}")
        split, path = item.split("=", 1)
        out[canonical_split(split)] = Path(path)
    return out


def build_sources(args: argparse.Namespace) -> list[tuple[str, RawDataset]]:
    """One reader per split of the source described by the command-line arguments."""
    root = Path(args.root)
    files = _split_files(args.split_files)
    common = {"nan_policy": args.nan_policy, "skip_bad": args.skip_bad}
    if args.format == "bigearthnet-v1":
        from fusmae_fast.data.bigearthnet import (
            V1_S1_DIR,
            V1_S2_DIR,
            BigEarthNetV1,
            default_v1_exclusions,
            find_v1_split_file,
        )

        s2 = Path(args.s2_root) if args.s2_root else root / V1_S2_DIR
        s1 = Path(args.s1_root) if args.s1_root else root / V1_S1_DIR
        exclude = args.exclude if args.exclude is not None else default_v1_exclusions(root)
        found = {s: files.get(s) or find_v1_split_file(root, s) for s in SPLITS}
        if not any(found.values()):
            print(
                f"[fusmae-fast] no split files under {root}: packing every patch as split 'all'",
                file=sys.stderr,
            )
            return [("all", BigEarthNetV1(s2, s1, None, exclude_files=exclude, **common))]
        return [
            (s, BigEarthNetV1(s2, s1, f, exclude_files=exclude, **common))
            for s, f in found.items()
            if f is not None
        ]
    if args.format == "bigearthnet-v2":
        from fusmae_fast.data.bigearthnet import BigEarthNetV2

        return [
            (s, BigEarthNetV2(root, s, exclude_snow_cloud=not args.keep_snow_cloud, **common)) for s in SPLITS
        ]
    from fusmae_fast.data.sen12ms import SEN12MS

    return [(s, SEN12MS(root, split_file=files.get(s), split=s, **common)) for s in SPLITS]


def run(args: argparse.Namespace) -> int:
    from fusmae_fast.data.packing import pack

    t0 = time.perf_counter()
    sources = build_sources(args)
    description = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("command", "out", "progress", "workers", "overwrite", "verify_samples")
    }
    index = pack(
        sources,
        args.out,
        s1_dtype=args.s1_dtype,
        chunk_size=args.chunk_size,
        workers=args.workers,
        overwrite=args.overwrite,
        verify_samples=args.verify_samples,
        progress=args.progress,
        description=description,
        skip_bad=args.skip_bad,
    )
    summary = {
        "out": str(args.out),
        "samples": index["num_samples"],
        "splits": index["splits"],
        "skipped": index["skipped"],
        "skipped_patches": len({r["patch"] for r in index.get("skipped_patches", [])}),
        "bytes_per_sample": index["bytes_per_sample"],
        "checksum": index["checksum"],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(summary, indent=1))
    if summary["skipped_patches"]:
        n, entries = summary["skipped_patches"], len(index["skipped_patches"])
        by_split = f" ({entries} entries by split)" if entries != n else ""
        print(
            f"[fusmae-fast] convert: --skip-bad left out {n} bad patch(es){by_split}; each is listed "
            f"with its reason under 'skipped_patches' in {Path(args.out) / 'index.json'}",
            file=sys.stderr,
        )
    return 0
