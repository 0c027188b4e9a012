"""``fusmae-fast eval linear|finetune|sen12ms``: flags -> ``EvalConfig`` -> ``run_evaluation``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from fusmae_fast.config import KERNELS, PRESETS
from fusmae_fast.evaluate.config import INPUTS, POOLS, PRECISIONS, TASKS, EvalConfig
from fusmae_fast.evaluate.driver import run_evaluation


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=TASKS)
    p.add_argument(
        "--ckpt", default=None, help="encoder.safetensors, checkpoint .pt, run folder or pretrained folder"
    )
    p.add_argument("--data", default=None, help="dataset root or packed store (default: built-in sample)")
    p.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS)
    p.add_argument("--out", "--output_dir", dest="output_dir", default=EvalConfig.output_dir)
    p.add_argument("--baseline", choices=("random",), default=None)
    p.add_argument("--preset", default="tiny", choices=tuple(PRESETS))
    p.add_argument("--label-fraction", "--label_fraction", dest="label_fraction", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight_decay", "--weight-decay", dest="weight_decay", type=float, default=None)
    p.add_argument("--layer_decay", "--layer-decay", dest="layer_decay", type=float, default=None)
    p.add_argument("--pool", choices=POOLS, default="cls")
    p.add_argument("--kernels", choices=KERNELS, default="torch")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_workers", "--num-workers", dest="num_workers", type=int, default=2)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    cfg = EvalConfig(**{k: v for k, v in vars(args).items() if k in names})
    result = run_evaluation(cfg)
    print((Path(cfg.output_dir) / "results.md").read_text())
    print(f"[fusmae-fast] {cfg.task} done in {result['wall_seconds']:.1f} s; outputs in {cfg.output_dir}")
    return 0
