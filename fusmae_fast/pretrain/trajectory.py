"""What determines a run's course, recorded in every checkpoint and compared when a run resumes.

A checkpoint's ``settings`` hold the model (preset, variant, masking, cross-attention weights, mask
ratio, target normalisation), the batch (batch size, accumulation, world size), the schedule (epochs,
peak lr, floor, warm-up, weight decay, betas, clipping), the seed, the resolved precision and the
identity of the training data (its kind, split, length and a cheap fingerprint: a hash of the sample
names and of the first sample). ``check_resume`` compares them with the resuming run:

- equal, or only more ``epochs``: the resume goes on (a longer run is said in the log);
- anything else differs: one ``ResumeMismatchError`` line lists every difference, unless
  ``allow_changes`` names each one (or says 'all'); the architecture (preset, variant,
  xattn_weights) can never change, since the weights would not fit;
- settings that do not alter the course (workers, logging, saving, device, kernels, compile, the
  data's path, ...) may always change; the changes are said in the log.

A checkpoint written before settings were recorded still resumes; ``check_resume`` says that it
cannot check it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fusmae_fast.pretrain.config import PretrainConfig

ARCHITECTURE = ("preset", "variant", "xattn_weights")
"""Settings whose change makes other weights: never allowed on resume."""

COURSE = (
    "masking",
    "mask_ratio",
    "norm_pix_loss",
    "precision",
    "batch_size",
    "accum_iter",
    "world_size",
    "lr",
    "min_lr",
    "warmup_epochs",
    "weight_decay",
    "beta1",
    "beta2",
    "clip_grad",
    "seed",
    "data_kind",
    "data_split",
    "data_length",
    "data_fingerprint",
)
"""Settings that change the run's course: a resume that differs needs ``allow_changes``."""

FREE = (
    "data",
    "num_workers",
    "log_every",
    "save_every",
    "keep_last",
    "recon_samples",
    "max_steps",
    "progress",
    "device",
    "kernels",
    "compile",
    "masked_projection",
    "on_nonfinite",
    "max_skips",
    "suspect_steps",
)
"""PretrainConfig fields a resume may always change (the changes are said in the log)."""


class ResumeMismatchError(ValueError):
    """A resume whose settings differ from those its checkpoint was written with."""


@dataclass
class ResumeCheck:
    """What ``check_resume`` found: the lines to say, and whether the batch layout changed."""

    notes: list[str]
    """Allowed changes and other facts, one line each (said in the log)."""
    changed: dict[str, tuple[Any, Any]]
    """Settings of the course that differ and were allowed: name -> (recorded, now)."""


def run_settings(
    cfg: PretrainConfig, world_size: int, precision: str, base_lr: float, train_set: Dataset
) -> dict[str, Any]:
    """The settings a checkpoint records (see the module docstring)."""
    return {
        "preset": cfg.preset,
        "variant": cfg.variant,
        "xattn_weights": cfg.xattn_weights,
        "masking": cfg.masking,
        "mask_ratio": cfg.mask_ratio,
        "norm_pix_loss": cfg.norm_pix_loss,
        "precision": precision,
        "batch_size": cfg.batch_size,
        "accum_iter": cfg.accum_iter,
        "world_size": world_size,
        "epochs": cfg.epochs,
        "lr": base_lr,
        "min_lr": cfg.min_lr,
        "warmup_epochs": cfg.warmup_epochs,
        "weight_decay": cfg.weight_decay,
        "beta1": cfg.beta1,
        "beta2": cfg.beta2,
        "clip_grad": cfg.clip_grad,
        "seed": cfg.seed,
        **data_identity(train_set),
    }


def data_identity(dataset: Dataset) -> dict[str, Any]:
    """Kind, split, length and fingerprint (SHA-256 of the names and of the first sample's images)."""
    info = getattr(dataset, "info", None)
    h = hashlib.sha256()
    names = getattr(dataset, "names", None)
    if names is not None:
        h.update("\n".join(map(str, names)).encode())
    n = len(dataset)  # type: ignore[arg-type]
    if n:
        item = dataset[0]
        for key in ("s1", "s2"):
            h.update(np.ascontiguousarray(torch.as_tensor(item[key]).numpy()).tobytes())
    return {
        "data_kind": getattr(info, "kind", None) or type(dataset).__name__,
        "data_split": getattr(dataset, "split", None),
        "data_length": n,
        "data_fingerprint": h.hexdigest()[:16],
    }


def check_resume(
    recorded: dict[str, Any] | None,
    settings: dict[str, Any],
    recorded_cfg: dict[str, Any] | None,
    cfg: PretrainConfig,
    source: str,
) -> ResumeCheck:
    """Compare a checkpoint's settings with the resuming run's; raise on a change not allowed."""
    notes: list[str] = []
    if recorded is None:
        notes.append(
            f"{source} records no settings (written by an older version): cannot check that this "
            "resume continues the same run"
        )
        return ResumeCheck(notes, {})
    diffs = {
        k: (recorded.get(k), settings[k])
        for k in (*ARCHITECTURE, *COURSE, "epochs")
        if recorded.get(k) != settings[k]
    }
    epochs = diffs.pop("epochs", None)
    if epochs is not None and epochs[1] > epochs[0]:
        notes.append(f"epochs {epochs[0]} -> {epochs[1]} (a longer run: the cosine schedule stretches)")
    elif epochs is not None:
        diffs["epochs"] = epochs
    fixed = [k for k in diffs if k in ARCHITECTURE]
    allowed = set(cfg.allow_changes)
    refused = [k for k in diffs if k in fixed or not ({k, "all"} & allowed)]
    if refused:
        listed = ", ".join(f"{k} {diffs[k][0]!r} -> {diffs[k][1]!r}" for k in diffs)
        if fixed:
            hint = f"{', '.join(fixed)} cannot change (the weights would not fit): start a new --output_dir"
        else:
            hint = (
                "resume with the same settings, start a new --output_dir, or pass "
                f"--allow_changes {' '.join(refused)}"
            )
        raise ResumeMismatchError(f"--resume: {source} was written with other settings: {listed}; {hint}")
    notes += [f"{k} {a!r} -> {b!r} (allowed by --allow_changes)" for k, (a, b) in diffs.items()]
    if recorded_cfg is not None:
        now = cfg.to_dict()
        notes += [
            f"{k} {recorded_cfg.get(k)!r} -> {now[k]!r}"
            for k in FREE
            if k in recorded_cfg and recorded_cfg.get(k) != now[k]
        ]
    return ResumeCheck(notes, diffs)
