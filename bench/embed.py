"""Embedding export benchmark: images/s of ``fusmae-fast embed`` (``run_embed``) end to end.

Usage
    python bench/embed.py                                   # 128 synthetic v1 patches, tiny, CPU
    python bench/embed.py --n 1024 --preset base --precision bf16,fp32 --workers 4,8 --batch 256   # a GPU
    python bench/embed.py --root /data/bigearthnet          # the train split of a real v1 root

What is timed: ``run_embed``'s loop over the row groups (``images_per_second`` of its summary): the
DataLoader reading images and footprints in ``--workers`` processes, the encoder's inference path
(``encode``, no masking, CLS pooling, autocast as ``--precision`` says), the copy to the host and the
row groups written to disk; not the start (model load, dataset index) nor the final assembly of the
file. Sources: ``tiff`` (the v1 GeoTIFF folders, with geometry) and ``store`` (the same patches
packed by ``fusmae_fast.data.packing``, run with ``--no-geometry``: the memory-mapped arrays alone). The
encoder has random weights of the preset's architecture (speed does not depend on the values).
Each configuration runs once after one warm-up run on the first; page cache warm (files just
written). Output: a table on stdout and ``bench/results/embed_<device>.{json,md}`` with the run
header of ``bench/devices.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fusmae_fast.bench import devices


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/embed.py", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=128, help="synthetic patches to write (ignored with --root)")
    p.add_argument("--root", default=None, help="a real BigEarthNet v1 root instead of synthetic data")
    p.add_argument("--preset", default="tiny", choices=("tiny", "small", "base"))
    p.add_argument("--precision", default="auto", help="comma list of auto, fp32, bf16, fp16")
    p.add_argument("--workers", default="2", help="DataLoader num_workers settings, comma-separated")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--sources", default="tiff,store", help="comma list of tiff, store")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads of the main process")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from fusmae_fast import build_model, export_encoder
    from fusmae_fast.data import open_dataset
    from fusmae_fast.data.packing import pack
    from fusmae_fast.data.synthetic import write_bigearthnet_v1
    from fusmae_fast.embed import EmbedConfig, run_embed

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    threads = devices.pin_threads(args.threads)
    info = devices.run_info(device, threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fusmae_embed_bench_") as tmp:
        tmp_path = Path(tmp)
        if args.root:
            root, source = Path(args.root), f"real BigEarthNet v1 at {args.root}"
        else:
            root = tmp_path / "raw"
            write_bigearthnet_v1(root, counts=(args.n, 0, 0), workers=2)
            source = f"synthetic BigEarthNet v1, {args.n} patches (fusmae_fast.data.synthetic)"
        tiff = open_dataset(root, split="train")
        data = {"tiff": str(root)}
        if "store" in args.sources.split(","):
            pack([("train", tiff)], tmp_path / "store", workers=2, progress=False)
            data["store"] = str(tmp_path / "store")
        torch.manual_seed(0)
        export_encoder(build_model(args.preset), tmp_path / "encoder.safetensors")
        configs = [
            (src, prec, int(w))
            for src in args.sources.split(",")
            for prec in args.precision.split(",")
            for w in args.workers.split(",")
        ]
        for k, (src, prec, workers) in enumerate([configs[0], *configs]):
            cfg = EmbedConfig(
                ckpt=str(tmp_path / "encoder.safetensors"),
                out=str(tmp_path / f"run{k}.parquet"),
                data=data[src],
                split="train",
                batch_size=args.batch,
                precision=prec,
                num_workers=workers,
                device=device.type,
                geometry=src == "tiff",
                progress=False,
            )
            t0 = time.perf_counter()
            summary = run_embed(cfg)
            wall = time.perf_counter() - t0
            if k == 0:
                continue  # warm-up
            rows.append(
                {"source": src, "precision": prec, "workers": workers, "wall_seconds": wall, **summary}
            )
    info["loadavg_end"] = devices.loadavg()
    result = {
        "benchmark": "embed",
        "run": info,
        "data": source,
        "preset": args.preset,
        "batch": args.batch,
        "rows": rows,
        "notes": "images/s of run_embed's loop (reading, encoder, row groups written); page cache warm",
    }
    devices.write_results(devices.RESULTS, f"embed_{devices.device_tag(device)}", result, markdown(result))
    print(f"wrote {devices.RESULTS}/embed_{devices.device_tag(device)}.json", file=sys.stderr)
    return 0


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Embed on {r['run']['device_name']} ({r['preset']} encoder, batch {r['batch']}, torch threads "
        f"{r['run']['threads']['intra_op']}, load {r['run']['loadavg_start']}): {r['data']}",
        "",
        "| source | precision | workers | rows | images/s | wall s (incl. start and assembly) |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['source']} | {row['precision']} | {row['workers']} | {row['rows']} | "
            f"{row['images_per_second']:.1f} | {row['wall_seconds']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
