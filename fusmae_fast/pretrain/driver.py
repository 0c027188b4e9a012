"""``run_pretraining``: set up, resume, train epoch after epoch, export the encoder.

The encoder is exported only when the run's weights have taken an optimizer step and are finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist
from torch.utils.data import Dataset

from fusmae_fast.checkpoint import export_encoder
from fusmae_fast.pretrain.config import PretrainConfig
from fusmae_fast.pretrain.engine import max_steps_reached, train_one_epoch
from fusmae_fast.pretrain.reporting import RunReport
from fusmae_fast.pretrain.setup import PretrainRun, set_up, wrap_for_training
from fusmae_fast.pretrain.state import NonFiniteLossError, first_nonfinite, resume


@dataclass
class PretrainResult:
    """What a finished run reports back (its files are in ``output_dir``)."""

    output_dir: Path
    """The run folder."""
    steps: int
    """Optimizer steps taken in all (resumed runs included)."""
    epochs_done: int
    """Epochs completed."""
    final_loss: float | None
    """The last loss logged (None when nothing was logged)."""
    skipped_batches: int
    """Batches dropped for a non-finite loss."""
    start_step: int = 0
    """The step this run started (resumed) from: ``steps - start_step`` were taken by this run."""
    had_work: bool = True
    """False when the run resumed at its end (nothing was left to train)."""


def run_pretraining(
    cfg: PretrainConfig,
    *,
    train_set: Dataset | None = None,
    val_set: Dataset | None = None,
) -> PretrainResult:
    """Pretrain as ``cfg`` says. Datasets may be given directly (items with ``s1`` and ``s2``)."""
    run = set_up(cfg, train_set, val_set)
    resumed = resume(run)
    pos = resumed.pos
    train_model = wrap_for_training(run)
    report = RunReport(run)
    report.start_at(resumed, [note for note in [cfg.warmup_note()] if note])
    start_step = pos.step
    had_work = pos.epoch < cfg.epochs and not max_steps_reached(cfg, pos)
    run.model.train()
    while pos.epoch < cfg.epochs and not max_steps_reached(cfg, pos):
        loader = run.epoch_loader(pos.epoch, pos.iter_in_epoch)
        if train_one_epoch(run, train_model, loader, pos, report) and run.dist.is_main:
            report.epoch_figures(pos.epoch - 1)
        del loader
    finish(run, report, pos.step)
    return PretrainResult(
        run.out_dir, pos.step, pos.epoch, report.final_loss, pos.skipped, start_step, had_work
    )


def finish(run: PretrainRun, report: RunReport, step: int) -> None:
    """Rank 0 exports ``encoder.safetensors`` of ``step`` (when the weights have trained, step > 0,
    and are finite) and draws the final loss curve; all ranks meet."""
    bad = first_nonfinite(run)
    if bad is not None:
        raise NonFiniteLossError(f"non-finite {bad} at the end of the run: no encoder exported")
    if run.dist.is_main:
        if step > 0:
            export_encoder(run.model, run.out_dir / "encoder.safetensors", step=step)
        report.loss_curve()
    if run.dist.world > 1:
        dist.barrier()
