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
        "--warmup_epochs",
        "--warmup-epochs",
        dest="warmup_epochs",
        type=float,
        default=d.warmup_epochs,
        help="linear warm-up in epochs (default: 5, or the whole run when it is shorter)",
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
    p.add_argument(
        "--max_skips",
        "--max-skips",
        dest="max_skips",
        type=int,
        default=d.max_skips,
        help="--on_nonfinite skip: stop after this many skipped batches in a row",
    )
    p.add_argument(
        "--suspect_steps",
        "--suspect-steps",
        dest="suspect_steps",
        type=int,
        default=None,
        help="on a non-finite loss, mark the checkpoints of the last K steps suspect "
        "(default: one save interval)",
    )
    p.add_argument(
        "--allow_changes",
        "--allow-changes",
        dest="allow_changes",
        nargs="+",
        default=[],
        metavar="SETTING",
        help="let --resume continue with these settings changed (as the refusal names them, or 'all')",
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
    """Exit status: 0 done, 3 stopped for a non-finite loss / state or took no optimizer step."""
    cfg = config_from_args(args)
    try:
        result = run_pretraining(cfg)
    except NonFiniteLossError as exc:
        print(f"[fusmae-fast] {exc}", file=sys.stderr)
        return 3
    if int(os.environ.get("RANK", "0")) != 0:
        return 0 if result.steps > result.start_step or not result.had_work else 3
    if not result.had_work:
        print(
            f"[fusmae-fast] nothing to do: the run is already at its end (step {result.steps}, epoch "
            f"{result.epochs_done} of {cfg.epochs}); pass a larger --epochs to train on. Outputs in "
            f"{result.output_dir}"
        )
        return 0
    if result.steps == result.start_step:
        print(
            f"[fusmae-fast] error: no optimizer step was taken ({result.skipped_batches} batch(es) skipped "
            f"for a non-finite loss); no encoder exported. Check the data and the lr.",
            file=sys.stderr,
        )
        return 3
    print(
        f"[fusmae-fast] done: {result.steps} steps, {result.epochs_done} epochs, final loss "
        f"{result.final_loss if result.final_loss is None else round(result.final_loss, 4)}; "
        f"outputs in {result.output_dir}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from fusmae_fast import pretrain
    from fusmae_fast.cli import run_reporting_errors

    parser = argparse.ArgumentParser(
        prog="python -m fusmae_fast.pretrain", description=pretrain.__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run_reporting_errors("pretrain", run, parser.parse_args(argv))
