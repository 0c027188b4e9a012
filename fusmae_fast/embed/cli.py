"""``fusmae-fast embed``: flags -> ``EmbedConfig`` -> ``run_embed``."""

from __future__ import annotations

import argparse
import dataclasses

from fusmae_fast.config import KERNELS
from fusmae_fast.embed.config import DEVICES, DTYPES, INPUTS, POOLS, PRECISIONS, SPLITS, EmbedConfig
from fusmae_fast.embed.driver import run_embed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ckpt", required=True, help="run folder, encoder.safetensors, checkpoint .pt or pretrained folder"
    )
    p.add_argument("--data", default="sample", help="dataset root, packed store, or sample / sample:sen12ms")
    p.add_argument("--out", required=True, help="the GeoParquet file to write (FILE.parquet)")
    p.add_argument("--split", choices=SPLITS, default="all")
    p.add_argument("--inputs", choices=INPUTS, default="s1+s2")
    p.add_argument("--pool", choices=POOLS, default="cls")
    p.add_argument(
        "--batch_size", "--batch-size", dest="batch_size", type=int, default=EmbedConfig.batch_size
    )
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--kernels", choices=KERNELS, default="torch")
    p.add_argument("--num_workers", "--num-workers", dest="num_workers", type=int, default=2)
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="stored width of the embedding values")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument(
        "--row_group_size",
        "--row-group-size",
        dest="row_group_size",
        type=int,
        default=EmbedConfig.row_group_size,
        help="rows per Parquet row group (the unit saved, and resumed after a kill)",
    )
    p.add_argument(
        "--no-geometry", dest="geometry", action="store_false", help="no footprints: plain Parquet"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(EmbedConfig)}
    run_embed(EmbedConfig(**{k: v for k, v in vars(args).items() if k in names}))
    return 0
