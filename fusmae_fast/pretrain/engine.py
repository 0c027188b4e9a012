"""``train_one_epoch`` (MAE's name): the steps of one epoch, and the pieces each step is made of.

A step: draw the batch's masks from per-sample seeds and run the model (under autocast) ->
check the loss is finite on every rank (a non-finite loss stops the run, or skips the batch; after
``max_skips`` skips in a row the run stops; a stop marks the recent checkpoints suspect) ->
backward (scaled, divided by ``accum_iter``) -> every ``accum_iter`` batches: set the lr of MAE's
per-iteration schedule, clip, optimizer step -> log, checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
import torch.distributed as dist

from fusmae_fast.masking import random_masking
from fusmae_fast.model import FusMAEOutput
from fusmae_fast.pretrain.config import PretrainConfig
from fusmae_fast.pretrain.reporting import RunReport
from fusmae_fast.pretrain.sampling import sample_seeds
from fusmae_fast.pretrain.setup import PretrainRun
from fusmae_fast.pretrain.state import (
    NonFiniteLossError,
    TrainState,
    checkpoint_due,
    save_training_checkpoint,
    stop_advice,
)

__all__ = ["NonFiniteLossError", "lr_at", "max_steps_reached", "train_one_epoch"]


def train_one_epoch(
    run: PretrainRun,
    train_model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    pos: TrainState,
    report: RunReport,
) -> bool:
    """Train from ``pos`` to the end of its epoch or to ``cfg.max_steps``, moving ``pos`` along.

    Returns True when the epoch ended with the optimizer step of its last batch (its figures are
    due); False when ``max_steps`` stopped it first or its last batches were skipped.
    """
    cfg = run.cfg
    batches = iter(loader)
    bar = report.progress(pos)
    for it in bar:
        t_wait = time.perf_counter()
        batch = next(batches)
        report.window.wait += time.perf_counter() - t_wait
        out = forward_loss(run, train_model, batch, pos.epoch)
        if not loss_is_finite(out.loss, run):
            skip_nonfinite_batch(run, out.loss, pos, it, report)
            continue
        run.scaler.scale(out.loss / cfg.accum_iter).backward()
        report.window.add(out, images=batch["s1"].shape[0] * run.dist.world)
        pos.iter_in_epoch, pos.consecutive_skips = it + 1, 0
        if pos.iter_in_epoch % cfg.accum_iter:
            continue
        lr = lr_at(cfg, run.base_lr, pos.epoch + pos.iter_in_epoch / run.iters_per_epoch)
        optimizer_step(run, lr)
        pos.step += 1
        end_of_epoch = pos.iter_in_epoch == run.iters_per_epoch
        if end_of_epoch:
            pos.epoch, pos.iter_in_epoch = pos.epoch + 1, 0
        done = max_steps_reached(cfg, pos)
        if report.window.n and (pos.step % cfg.log_every == 0 or end_of_epoch or done):
            report.log_step(pos, lr, end_of_epoch=end_of_epoch, bar=bar)
        if checkpoint_due(cfg, pos.step, end_of_epoch=end_of_epoch, done=done):
            save_training_checkpoint(run, pos)
        if end_of_epoch or done:
            return end_of_epoch
    # the epoch's last iterations were skipped (non-finite loss): the epoch is over all the same
    pos.epoch, pos.iter_in_epoch = pos.epoch + 1, 0
    return False


def forward_loss(
    run: PretrainRun, train_model: torch.nn.Module, batch: dict[str, Any], epoch: int
) -> FusMAEOutput:
    """The model's losses on ``batch``, its masks drawn from each sample's (seed, epoch, index)."""
    s1 = batch["s1"].to(run.device, non_blocking=True).float()
    s2 = batch["s2"].to(run.device, non_blocking=True).float()
    seeds = sample_seeds(run.cfg.seed, epoch, batch["index"])
    dtype = run.autocast_dtype
    with torch.autocast(run.device.type, dtype=dtype) if dtype else contextlib.nullcontext():
        # the masking is drawn eagerly (per-sample seeded host RNG), so that a compiled model
        # is one graph without breaks
        mcfg = run.model.config
        masking = random_masking(
            s1.shape[0], mcfg.num_patches, mcfg.mask_ratio, mcfg.masking, seeds=seeds, device=run.device
        )
        return train_model(s1, s2, masking=masking, loss_only=run.cfg.masked_projection)


def loss_is_finite(loss: torch.Tensor, run: PretrainRun) -> bool:
    """True when the loss is finite on every rank (so that all ranks take or skip the step together)."""
    finite = torch.isfinite(loss.detach()).to(torch.float32)
    if run.dist.world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite)


def skip_nonfinite_batch(
    run: PretrainRun, loss: torch.Tensor, pos: TrainState, it: int, report: RunReport
) -> None:
    """``on_nonfinite='stop'``: raise, saving nothing. 'skip': drop the batch (and the gradients
    accumulated since the last step), count it, log it; raise after ``max_skips`` in a row. Raising
    marks the checkpoints of the steps before suspect."""
    cfg = run.cfg
    where = f"optimizer step {pos.step}, epoch {pos.epoch}, iteration {it}"
    if cfg.on_nonfinite == "stop":
        reason = f"non-finite loss ({loss.item()}) at {where}"
        raise NonFiniteLossError(
            f"{reason}; nothing was saved over the last good checkpoint in {run.ckpt_dir}. "
            f"{stop_advice(run, pos, reason)}"
        )
    pos.skipped += 1
    pos.consecutive_skips += 1
    run.optimizer.zero_grad(set_to_none=True)
    report.log({"event": "skipped_nonfinite", "step": pos.step, "epoch": pos.epoch, "iteration": it})
    pos.iter_in_epoch = it + 1
    if pos.consecutive_skips >= cfg.max_skips:
        reason = f"{pos.consecutive_skips} batches in a row had a non-finite loss (up to {where})"
        raise NonFiniteLossError(
            f"{reason}: the run is diverging (--on_nonfinite skip stops after --max_skips {cfg.max_skips}); "
            f"nothing was saved. {stop_advice(run, pos, reason, suggest_skip=False)}"
        )


def optimizer_step(run: PretrainRun, lr: float) -> None:
    """Set the lr, clip the gradient norm if asked, step (through the scaler), clear the gradients."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    if run.cfg.clip_grad is not None:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)


def lr_at(cfg: PretrainConfig, base_lr: float, epoch_float: float) -> float:
    """MAE's per-iteration schedule: linear warm-up, then half-cycle cosine to min_lr."""
    warmup = cfg.warmup
    if epoch_float < warmup:
        return base_lr * epoch_float / warmup
    span = max(cfg.epochs - warmup, 1e-12)
    t = min((epoch_float - warmup) / span, 1.0)
    return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def max_steps_reached(cfg: PretrainConfig, pos: TrainState) -> bool:
    return cfg.max_steps is not None and pos.step >= cfg.max_steps
