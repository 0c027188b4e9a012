"""``fusmae-fast sample-data OUT --format bigearthnet-v1|bigearthnet-v2|sen12ms --n N``.

Writes a synthetic dataset of N labelled patches (split 4 : 1 : 1 into train / validation / test) in
exactly the real on-disk layout of the chosen format (see :mod:`fusmae_fast.data.synthetic`), ready
for ``fusmae-fast convert`` or ``--data OUT``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fusmae_fast.data.synthetic import FORMATS, write_sample


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--format", choices=FORMATS, default="bigearthnet-v1")
    p.add_argument("--n", type=int, default=384, help="number of labelled patches (default 384)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="worker processes")


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise SystemExit(f"--n must be >= 1, got {args.n}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and is not empty")
    t0 = time.perf_counter()
    m = write_sample(out, args.format, args.n, seed=args.seed, workers=args.workers, progress=True)
    summary = {
        "out": str(out),
        "format": m.format,
        "splits": {k: len(v) for k, v in m.splits.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(summary, indent=1))
    return 0
