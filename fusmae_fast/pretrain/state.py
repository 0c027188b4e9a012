"""A run's state: its position, the RNG states, and the checkpoint that holds them (out and in).

A checkpoint holds model, optimizer, scaler, the position (``TrainState``), every RNG state, the
forms the torch path picked by timing (``form_timing.export_picks``: a resume computes with the same
ones), both configs and the settings that determine the run's course (``trajectory``), so that N
steps + resume + N steps is bit-identical to 2N steps on the CPU (tested). Out: ``checkpoint_state`` ->
``save_training_checkpoint`` (rank 0, atomic, rotated, refused when a weight or optimizer state is
not finite; when is ``checkpoint_due``). On a non-finite loss ``mark_recent_suspect`` marks the
checkpoints of the last ``suspect_steps`` steps. In: ``resume`` finds the checkpoint ``cfg.resume``
names (the newest valid one not marked suspect for 'auto'), checks its settings against the run's
and ``restore_state`` loads it into the run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusmae_fast import form_timing
from fusmae_fast.checkpoint import (
    latest_valid,
    list_checkpoints,
    load_checkpoint,
    mark_suspect,
    remove_stale_temp_files,
    save_checkpoint,
    suspect_reason,
)
from fusmae_fast.pretrain.config import PretrainConfig
from fusmae_fast.pretrain.setup import PretrainRun
from fusmae_fast.pretrain.trajectory import check_resume


class NonFiniteLossError(RuntimeError):
    """The loss (or a weight, or an optimizer state) became NaN/Inf; nothing was saved over the last
    good checkpoint, and the checkpoints of the steps before are marked suspect."""


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
    consecutive_skips: int = 0
    """Batches dropped in a row since the last one trained on (not saved: a resume starts at 0)."""


@dataclass
class Resumed:
    """Where ``resume`` starts the run and what it says about it."""

    pos: TrainState
    """The position to start from."""
    source: Path | None = None
    """The checkpoint resumed from (None: from scratch)."""
    notes: list[str] = field(default_factory=list)
    """Lines said in the log: the checkpoint chosen and why, allowed changes of settings."""


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``'s generators. CUDA: one state per device of the saving machine; the
    devices present here get theirs (a run saved on 8 GPUs resumes on 1), extra states are ignored."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


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
        "form_picks": form_timing.export_picks(),
        "config": run.cfg.to_dict(),
        "model_config": run.model.config.to_dict(),
        "settings": run.settings,
    }


def checkpoint_due(cfg: PretrainConfig, step: int, *, end_of_epoch: bool, done: bool) -> bool:
    """At each epoch end, every ``save_every`` optimizer steps, and when the run stops."""
    return end_of_epoch or bool(cfg.save_every and step % cfg.save_every == 0) or done


def save_training_checkpoint(run: PretrainRun, pos: TrainState) -> None:
    """Rank 0 writes ``checkpoints/ckpt-<step>.pt`` (atomic, verified, the newest ``keep_last`` kept).
    Every rank first checks that the weights and optimizer state are finite (else NonFiniteLossError,
    nothing written)."""
    bad = first_nonfinite(run)
    if bad is not None:
        reason = f"non-finite {bad} after optimizer step {pos.step}"
        raise NonFiniteLossError(f"{reason}: checkpoint not written. {stop_advice(run, pos, reason)}")
    if run.dist.is_main:
        save_checkpoint(run.ckpt_dir, pos.step, checkpoint_state(run, pos), keep_last=run.cfg.keep_last)


def first_nonfinite(run: PretrainRun) -> str | None:
    """The name of the first weight or optimizer state holding a NaN/Inf (None: all finite)."""
    for name, t in run.model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"weight {name}"
    for i, st in enumerate(run.optimizer.state.values()):
        for key, t in st.items():
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"optimizer state {key} of parameter {i}"
    return None


def suspect_window(run: PretrainRun) -> int:
    """K of 'the checkpoints of the last K steps are suspect': ``suspect_steps``, else one save
    interval (``save_every``, or an epoch's optimizer steps)."""
    cfg = run.cfg
    if cfg.suspect_steps is not None:
        return cfg.suspect_steps
    return cfg.save_every or max(1, run.iters_per_epoch // cfg.accum_iter)


def mark_recent_suspect(run: PretrainRun, pos: TrainState, reason: str) -> list[Path]:
    """Rank 0 marks the checkpoints of steps ``pos.step - suspect_window`` to ``pos.step`` suspect
    (that of the step whose weights gave the non-finite value, and those before); returns them."""
    if not run.dist.is_main:
        return []
    return mark_suspect(run.ckpt_dir, pos.step - suspect_window(run) - 1, reason)


def stop_advice(run: PretrainRun, pos: TrainState, reason: str, *, suggest_skip: bool = True) -> str:
    """Mark the recent checkpoints suspect and say which one ``--resume auto`` would take."""
    marked = mark_recent_suspect(run, pos, reason)
    found = list_checkpoints(run.ckpt_dir)
    good = [p for p in found if suspect_reason(p) is None]
    said = f"Marked suspect: {', '.join(p.name for p in marked)}. " if marked else ""
    if good:
        start = f"--resume auto would start from {good[-1].name}"
    elif found:
        start = "--resume auto would start from scratch (every checkpoint is suspect)"
    else:
        start = "There is no checkpoint to resume from"
    skip = ", or pass --on_nonfinite skip" if suggest_skip else ""
    return (
        f"{said}{start}; lower the lr, use --precision fp32 (resuming: with --allow_changes lr / "
        f"precision), check the data{skip}."
    )


# -------------------------------------------------------------------------------------------- in
def resume(run: PretrainRun) -> Resumed:
    """Where to start: the checkpoint ``cfg.resume`` names (checked, loaded into the run), else the
    start. Rank 0 first removes the temporary files of killed saves."""
    cfg = run.cfg
    notes: list[str] = []
    if run.dist.is_main:
        stale = remove_stale_temp_files(run.ckpt_dir)
        if stale:
            notes.append(f"removed {len(stale)} temporary file(s) of interrupted saves in {run.ckpt_dir}")
    if not cfg.resume:
        return Resumed(TrainState(), None, notes)
    found = find_resume_checkpoint(cfg.resume, run.ckpt_dir)
    if found is None:
        suspect = [p.name for p in list_checkpoints(run.ckpt_dir) if suspect_reason(p) is not None]
        why = f"every checkpoint is marked suspect ({', '.join(suspect)})" if suspect else "no checkpoint yet"
        return Resumed(TrainState(), None, [*notes, f"--resume auto: {why}, starting from scratch"])
    path, state = found
    check = check_resume(state.get("settings"), run.settings, state.get("config"), cfg, str(path))
    pos = restore_state(run, state, str(path))
    pos = move_position(run, pos, state.get("settings"), check.changed)
    newer = [p.name for p in list_checkpoints(run.ckpt_dir) if p.name > path.name and suspect_reason(p)]
    chosen = f", the newest checkpoint not marked suspect (passed over: {', '.join(newer)})" if newer else ""
    notes.append(
        f"resumed from {path} (step {pos.step}, epoch {pos.epoch}, iteration {pos.iter_in_epoch}){chosen}"
    )
    return Resumed(pos, path, notes + check.notes)


def find_resume_checkpoint(resume_from: str, ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """'auto': the newest valid checkpoint in ``ckpt_dir`` not marked suspect (None when there is
    none); else the checkpoint at that path (verified; a ValueError naming it when it is not)."""
    if resume_from == "auto":
        return latest_valid(ckpt_dir)
    try:
        return Path(resume_from), load_checkpoint(resume_from)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"--resume {resume_from}: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"--resume {resume_from}: {exc} (--resume auto takes the newest valid one)") from exc


def restore_state(run: PretrainRun, state: dict[str, Any], source: str = "checkpoint") -> TrainState:
    """Load a checkpoint's model, optimizer, scaler and RNG states into the run; its position."""
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(
            f"{source}: its weights do not fit this run's model (--preset {run.cfg.preset}, --variant "
            f"{run.cfg.variant}, --xattn_weights {run.cfg.xattn_weights}): {detail[:240]}"
        ) from exc
    run.scaler.load_state_dict(state["scaler"])
    pos = TrainState(
        step=state["step"],
        epoch=state["epoch"],
        iter_in_epoch=state["iter_in_epoch"],
        skipped=state.get("skipped_batches", 0),
    )
    set_rng_state(state["rng"])
    form_timing.restore_picks(state.get("form_picks", []))  # the same forms, the same rounding
    return pos


def move_position(
    run: PretrainRun, pos: TrainState, recorded: dict[str, Any] | None, changed: dict[str, Any]
) -> TrainState:
    """The same place in the epoch's sample order when an allowed change altered the batches per
    iteration (batch_size, world_size), or the epoch's length."""
    if recorded is not None and {"batch_size", "world_size"} & set(changed):
        consumed = pos.iter_in_epoch * recorded["batch_size"] * recorded["world_size"]
        per_iter = run.cfg.batch_size * run.dist.world
        pos.iter_in_epoch = consumed // per_iter // run.cfg.accum_iter * run.cfg.accum_iter
    if pos.iter_in_epoch >= run.iters_per_epoch:
        pos.epoch, pos.iter_in_epoch = pos.epoch + 1, 0
    return pos
