"""A run's state: its position, the RNG states, and the checkpoint that holds them (out and in).

A checkpoint holds model, optimizer, scaler, the position (``TrainState``), every RNG state and both
configs, so that N steps + resume + N steps is bit-identical to 2N steps on the CPU (tested). Out:
``checkpoint_state`` -> ``save_training_checkpoint`` (rank 0, atomic, rotated; when is
``checkpoint_due``). In: ``resume`` finds the checkpoint ``cfg.resume`` names and ``restore_state``
loads it into the run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusmae_fast.checkpoint import latest_valid, load_checkpoint, save_checkpoint
from fusmae_fast.pretrain.config import PretrainConfig
from fusmae_fast.pretrain.setup import PretrainRun


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint and restored on resume."""

    step: int = 0
    """Optimizer steps taken."""
    epoch: int = 0
    """The epoch the next batch belongs to."""
    iter_in_epoch: int = 0
    """Batches of that epoch already consumed (trained on or skipped)."""
    skipped: int = 0
    """Batches dropped for a non-finite loss (``on_nonfinite='skip'``)."""


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------- out
def checkpoint_state(run: PretrainRun, pos: TrainState) -> dict[str, Any]:
    """Everything a checkpoint holds (the keys ``restore_state`` reads, and both configs)."""
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "step": pos.step,
        "epoch": pos.epoch,
        "iter_in_epoch": pos.iter_in_epoch,
        "skipped_batches": pos.skipped,
        "rng": rng_state(),
        "config": run.cfg.to_dict(),
        "model_config": run.model.config.to_dict(),
    }


def checkpoint_due(cfg: PretrainConfig, step: int, *, end_of_epoch: bool, done: bool) -> bool:
    """At each epoch end, every ``save_every`` optimizer steps, and when the run stops."""
    return end_of_epoch or bool(cfg.save_every and step % cfg.save_every == 0) or done


def save_training_checkpoint(run: PretrainRun, pos: TrainState) -> None:
    """Rank 0 writes ``checkpoints/ckpt-<step>.pt`` (atomic, verified, the newest ``keep_last`` kept)."""
    if run.dist.is_main:
        save_checkpoint(run.ckpt_dir, pos.step, checkpoint_state(run, pos), keep_last=run.cfg.keep_last)


# -------------------------------------------------------------------------------------------- in
def resume(run: PretrainRun) -> TrainState:
    """The position to start from: that of the checkpoint ``cfg.resume`` names (loaded into the run),
    else the start."""
    cfg = run.cfg
    if not cfg.resume:
        return TrainState()
    found = find_resume_checkpoint(cfg.resume, run.ckpt_dir)
    if found is None:
        if run.dist.is_main:
            print("[fusmae-fast] --resume auto: no checkpoint yet, starting from scratch")
        return TrainState()
    path, state = found
    pos = restore_state(run, state)
    if run.dist.is_main:
        print(
            f"[fusmae-fast] resumed from {path} "
            f"(step {pos.step}, epoch {pos.epoch}, iteration {pos.iter_in_epoch})"
        )
    return pos


def find_resume_checkpoint(resume_from: str, ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """'auto': the newest valid checkpoint in ``ckpt_dir`` (None when there is none); else the
    checkpoint at that path (verified)."""
    if resume_from == "auto":
        return latest_valid(ckpt_dir)
    return Path(resume_from), load_checkpoint(resume_from)


def restore_state(run: PretrainRun, state: dict[str, Any]) -> TrainState:
    """Load a checkpoint's model, optimizer, scaler and RNG states into the run; its position."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    pos = TrainState(
        step=state["step"],
        epoch=state["epoch"],
        iter_in_epoch=state["iter_in_epoch"],
        skipped=state.get("skipped_batches", 0),
    )
    set_rng_state(state["rng"])
    return pos
