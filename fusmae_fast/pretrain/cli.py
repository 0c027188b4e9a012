"""``fusmae-fast pretrain`` and ``python -m fusmae_fast.pretrain``: flags -> ``PretrainConfig`` -> run."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from fusmae_fast.config import KERNELS, MASKINGS, PRESETS, VARIANTS, XATTN_WEIGHTS
from fusmae_fast.pretrain.config import DEVICES, NONFINITE_ACTIONS, PRECISIONS, PretrainConfig
from fusmae_fast.pretrain.driver import run_pretraining
from fusmae_fast.pretrain.engine import NonFiniteLossError


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = PretrainConfig()
    p.add_argument("--data", default=None, help="packed store or dataset root (default: built-in sample)")
    p.add_argument("--output_dir", "--output-dir", "--out", dest="output_dir", default=d.output_dir)
    p.add_argument("--preset", default=d.preset, choices=tuple(PRESETS))
    p.add_argument("--variant", default=d.variant, choices=VARIANTS)
    p.add_argument("--masking", default=d.masking, choices=MASKINGS)
    p.add_argument(
        "--xattn_weights",
        "--xattn-weights",
        dest="xattn_weights",
        default=d.xattn_weights,
        choices=XATTN_WEIGHTS,
    )
    p.add_argument("--mask_ratio", "--mask-ratio", dest="mask_ratio", type=float, default=d.mask_ratio)
    p.add_argument(
        "--norm_pix_loss",
        "--norm-pix-loss",
        dest="norm_pix_loss",
        action=argparse.BooleanOptionalAction,
        default=d.norm_pix_loss,
    )
    p.add_argument("--kernels", default=d.kernels, choices=KERNELS)
    p.add_argument("--compile", action="store_true")
    p.add_argument(
        "--masked-projection",
        "--masked_projection",
        dest="masked_projection",
        action="store_true",
        help="decoders project only the masked patches (consistent masking; fewer FLOPs, more passes)",
    )
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=d.batch_size)
    p.add_argument("--accum_iter", "--accum-iter", dest="accum_iter", type=int, default=d.accum_iter)
    p.add_argument("--blr", type=float, default=d.blr, help="base lr: lr = blr * effective batch / 256")
    p.add_argument("--lr", type=float, default=None, help="absolute lr (overrides --blr)")
    p.add_argument("--min_lr", "--min-lr", dest="min_lr", type=float, default=d.min_lr)
    p.add_argument(
        "--warmup_epochs", "--warmup-epochs", dest="warmup_epochs", type=float, default=d.warmup_epochs
    )
    p.add_argument(
        "--weight_decay", "--weight-decay", dest="weight_decay", type=float, default=d.weight_decay
    )
    p.add_argument("--clip_grad", "--clip-grad", dest="clip_grad", type=float, default=None)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num_workers", "--num-workers", dest="num_workers", type=int, default=d.num_workers)
    p.add_argument("--save_every", "--save-every", dest="save_every", type=int, default=d.save_every)
    p.add_argument("--keep_last", "--keep-last", dest="keep_last", type=int, default=d.keep_last)
    p.add_argument("--resume", default=None, help="'auto' or a checkpoint path")
    p.add_argument(
        "--on_nonfinite",
        "--on-nonfinite",
        dest="on_nonfinite",
        default=d.on_nonfinite,
        choices=NONFINITE_ACTIONS,
    )
    p.add_argument("--log_every", "--log-every", dest="log_every", type=int, default=d.log_every)
    p.add_argument("--max_steps", "--max-steps", dest="max_steps", type=int, default=None)
    p.add_argument(
        "--recon_samples", "--recon-samples", dest="recon_samples", type=int, default=d.recon_samples
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--device", default=d.device, choices=DEVICES)


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    return PretrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    try:
        result = run_pretraining(cfg)
    except NonFiniteLossError as exc:
        print(f"[fusmae-fast] {exc}", file=sys.stderr)
        return 3
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"[fusmae-fast] done: {result.steps} steps, {result.epochs_done} epochs, final loss "
            f"{result.final_loss if result.final_loss is None else round(result.final_loss, 4)}; "
            f"outputs in {result.output_dir}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    from fusmae_fast import pretrain

    parser = argparse.ArgumentParser(
        prog="python -m fusmae_fast.pretrain", description=pretrain.__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
