"""Data-loading benchmark: samples/s reading GeoTIFFs vs reading the packed store, and its size on disk.

Usage
    python bench/data_read.py                 # 384 synthetic BigEarthNet v1 patches (the built-in size)
    python bench/data_read.py --n 128 --passes 2
    python bench/data_read.py --root /data/bigearthnet --split-file /data/splits/val.csv   # real data

What is timed: a full pass of a ``torch.utils.data.DataLoader`` (batch ``--batch``, no shuffling) over
the dataset, for each source (``tiff``: :class:`BigEarthNetV1` reading 14 GeoTIFFs per patch through
rasterio; ``store``: :class:`PackedDataset` on the memory-mapped store converted from the same data)
and each ``--workers`` setting (0 = in the main process). Items are the full training items (bilinear
upsampling of the 20 m/60 m bands, normalisation), so the figure is what pretraining sees. Each
configuration runs ``--passes`` passes; samples/s of the median pass is reported (the first pass also
pays for starting the workers; all passes read from the page cache, as the files were just written:
the benchmark does not drop the machine's caches). The convert itself (samples/s, 2 workers) and the
bytes per sample of the store (array data, and the files incl. ``.npy`` headers) are reported too,
beside the GeoTIFF folders' size per sample. Output: a table on stdout and
``bench/results/data_read_<device>.json`` (with the run header of ``bench/devices.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from fusmae_fast.bench import devices


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/data_read.py", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=384, help="synthetic patches to write (ignored with --root)")
    p.add_argument("--root", default=None, help="a real BigEarthNet v1 root instead of synthetic data")
    p.add_argument("--split-file", default=None, help="with --root: the split file to read")
    p.add_argument("--workers", default="0,2", help="DataLoader num_workers settings, comma-separated")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads of the main process")
    p.add_argument("--out", default=None, help="results JSON (default bench/results/data_read_<device>.json)")
    return p.parse_args(argv)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def time_passes(ds: Dataset, workers: int, batch: int, passes: int) -> dict[str, Any]:
    seconds = []
    n = len(ds)  # type: ignore[arg-type]
    for _ in range(passes):
        loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers)
        t0 = time.perf_counter()
        seen = 0
        for b in loader:
            seen += b["s2"].shape[0]
        seconds.append(time.perf_counter() - t0)
        if seen != n:
            raise RuntimeError(f"a pass saw {seen} samples, expected {n}")
    med = statistics.median(seconds)
    return {"workers": workers, "pass_seconds": seconds, "samples_per_s": n / med, "samples": n}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from fusmae_fast.data import BigEarthNetV1, PackedDataset
    from fusmae_fast.data.packing import pack
    from fusmae_fast.data.synthetic import write_bigearthnet_v1

    threads = devices.pin_threads(args.threads)
    info = devices.run_info(torch.device("cpu"), threads)
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="fusmae_data_read_") as tmp:
        tmp_path = Path(tmp)
        if args.root:
            root = Path(args.root)
            source = "real BigEarthNet v1 at " + str(root)
            split_file = Path(args.split_file) if args.split_file else None
        else:
            root = tmp_path / "raw"
            t0 = time.perf_counter()
            write_bigearthnet_v1(root, args.n, workers=2)
            print(f"wrote {args.n} synthetic patches in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            source = f"synthetic BigEarthNet v1, {args.n} patches (fusmae_fast.data.synthetic)"
            split_file = None
        tiff = BigEarthNetV1(root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0", split_file)
        n = len(tiff)
        tiff_bytes = folder_bytes(root / "BigEarthNet-v1.0") + folder_bytes(root / "BigEarthNet-S1-v1.0")
        if split_file is not None:  # a split of a bigger archive: size per patch from the folders' average
            tiff_bytes = tiff_bytes * n // max(1, sum(1 for _ in (root / "BigEarthNet-v1.0").iterdir()))
        stores = {}
        convert = {}
        for s1_dtype in ("float32", "float16"):
            out = tmp_path / f"store_{s1_dtype}"
            t0 = time.perf_counter()
            index = pack([("all", tiff)], out, s1_dtype=s1_dtype, workers=2, progress=False)
            dt = time.perf_counter() - t0
            stores[s1_dtype] = out
            convert[s1_dtype] = {
                "seconds": dt,
                "samples_per_s": n / dt,
                "bytes_per_sample": index["bytes_per_sample"],
                "file_bytes_per_sample": index["file_bytes"] / n,
            }
        rows = []
        for name, ds in (
            ("tiff", tiff),
            ("store f32", PackedDataset(stores["float32"], "all")),
            ("store f16", PackedDataset(stores["float16"], "all")),
        ):
            for w in workers:
                r = time_passes(ds, w, args.batch, args.passes)
                r["source"] = name
                rows.append(r)
                print(f"  {name:10s} workers={w}: {r['samples_per_s']:8.1f} samples/s", file=sys.stderr)
    info["loadavg_end"] = devices.loadavg()
    result = {
        "benchmark": "data_read",
        "run": info,
        "data": source,
        "samples": n,
        "batch": args.batch,
        "passes": args.passes,
        "tiff_bytes_per_sample": tiff_bytes / n,
        "convert": convert,
        "read": rows,
        "notes": "page cache warm for both sources (files just written); items include upsampling and "
        "normalisation; samples/s of the median pass",
    }
    out = (
        Path(args.out)
        if args.out
        else devices.RESULTS / f"data_read_{devices.device_tag(torch.device('cpu'))}.json"
    )
    devices.write_json_atomic(out, result)
    print(markdown(result))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Data read on {r['run']['device_name']} ({r['samples']} samples, batch {r['batch']}, "
        f"torch threads {r['run']['threads']['intra_op']}, load {r['run']['loadavg_start']}): {r['data']}",
        "",
        "| source | workers | samples/s | speed-up vs TIFF |",
        "|---|---|---|---|",
    ]
    base = {row["workers"]: row["samples_per_s"] for row in r["read"] if row["source"] == "tiff"}
    for row in r["read"]:
        lines.append(
            f"| {row['source']} | {row['workers']} | {row['samples_per_s']:.1f} | "
            f"{row['samples_per_s'] / base[row['workers']]:.1f}x |"
        )
    lines += [
        "",
        "| format | bytes/sample (data) | bytes/sample (files) | convert samples/s |",
        "|---|---|---|---|",
    ]
    lines.append(f"| GeoTIFF folders | - | {r['tiff_bytes_per_sample']:,.0f} | - |")
    for dtype, c in r["convert"].items():
        lines.append(
            f"| store, S1 {dtype} | {c['bytes_per_sample']:,.0f} | {c['file_bytes_per_sample']:,.0f} | "
            f"{c['samples_per_s']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
