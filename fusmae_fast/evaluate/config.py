"""``EvalConfig``: one evaluation run (a task, a checkpoint and/or a random baseline, some inputs)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fusmae_fast.config import KERNELS

TASKS = ("linear", "finetune", "sen12ms")
INPUTS = ("s1", "s2", "s1+s2")
POOLS = ("cls", "mean")
PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULTS = {
    "linear": dict(epochs=20, label_fraction=0.01, lr=1e-3, weight_decay=0.0),
    "finetune": dict(epochs=10, label_fraction=1.0, lr=1e-4, weight_decay=0.05),
    "sen12ms": dict(epochs=10, label_fraction=1.0, lr=1e-3, weight_decay=0.0),
}
"""Each task's protocol settings, used where the config leaves them None."""


@dataclass
class EvalConfig:
    """One evaluation run: a task, one checkpoint (plus an optional random-init baseline), some inputs."""

    task: str = "linear"
    """'linear', 'finetune' or 'sen12ms'."""
    ckpt: str | None = None
    """encoder.safetensors, a training checkpoint (.pt), a run folder or a pretrained folder
    (``FusMAE.save_pretrained``); None only with baseline='random'."""
    data: str | None = None
    """Dataset root or packed store (None: the built-in synthetic sample)."""
    inputs: tuple[str, ...] = INPUTS
    """Input modalities to evaluate: any of 's1', 's2', 's1+s2'."""
    output_dir: str = "runs/eval"
    """Where metrics_<task>.json, results.md and the figures go (shared by several tasks)."""
    baseline: str | None = None
    """'random': also evaluate a randomly initialised encoder of the same architecture."""
    preset: str = "tiny"
    """Architecture of the random baseline when no checkpoint is given."""
    label_fraction: float | None = None
    """Fraction of training labels (default: linear 0.01, finetune and sen12ms 1.0)."""
    epochs: int | None = None
    """Training epochs (default: linear 20, finetune 10, sen12ms 10)."""
    batch_size: int = 128
    """Batch size for training and feature extraction."""
    lr: float | None = None
    """Peak learning rate (default: 1e-3 for the probes, 1e-4 for fine-tuning)."""
    weight_decay: float | None = None
    """AdamW weight decay (default: 0 for the probes, 0.05 for fine-tuning)."""
    layer_decay: float | None = None
    """Fine-tuning: layer-wise lr decay factor (e.g. 0.75); None = off."""
    pool: str = "cls"
    """Feature: 'cls' token or 'mean' of the patch tokens."""
    label_smoothing: float = 0.1
    """SEN12MS cross-entropy label smoothing."""
    kernels: str = "torch"
    """Op backend of the encoder."""
    precision: str = "fp32"
    """'fp32', 'bf16' or 'fp16' autocast for the encoder."""
    seed: int = 0
    """Subset selection, head initialisation and shuffling."""
    num_workers: int = 2
    """DataLoader workers."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'."""
    progress: bool = True
    """tqdm progress bars on a TTY."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"EvalConfig.task must be one of {TASKS}, got {self.task!r}")
        self.inputs = tuple(self.inputs)
        bad = [i for i in self.inputs if i not in INPUTS]
        if bad or not self.inputs:
            raise ValueError(f"EvalConfig.inputs must be a non-empty subset of {INPUTS}, got {self.inputs}")
        if self.ckpt is None and self.baseline is None:
            raise ValueError("give --ckpt, or --baseline random (or both)")
        if self.baseline not in (None, "random"):
            raise ValueError(f"EvalConfig.baseline must be None or 'random', got {self.baseline!r}")
        if self.pool not in POOLS:
            raise ValueError(f"EvalConfig.pool must be 'cls' or 'mean', got {self.pool!r}")
        if self.kernels not in KERNELS:
            raise ValueError(f"EvalConfig.kernels must be one of {KERNELS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"EvalConfig.precision must be fp32, bf16 or fp16, got {self.precision!r}")
        for name, (flag, wanted, ok) in NUMBERS.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            where = f"EvalConfig.{name}" + (f" ({flag})" if flag else "")
            integer = name in INTEGERS
            kind = "an integer" if integer else "a finite number"
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
                raise ValueError(f"{where} must be {kind} {wanted}, got {value!r}")
            if not math.isfinite(value) or not ok(value):
                raise ValueError(f"{where} must be {kind} {wanted}, got {value}")

    def setting(self, name: str) -> Any:
        """``name`` (epochs, label_fraction, lr, weight_decay) as given, else the task's default."""
        value = getattr(self, name)
        return DEFAULTS[self.task][name] if value is None else value


NUMBERS: dict[str, tuple[str | None, str, Callable[[float], bool]]] = {
    "label_fraction": ("--label-fraction", "in (0, 1]", lambda v: 0 < v <= 1),
    "epochs": ("--epochs", ">= 1", lambda v: v >= 1),
    "batch_size": ("--batch_size", ">= 1", lambda v: v >= 1),
    "lr": ("--lr", "> 0", lambda v: v > 0),
    "weight_decay": ("--weight_decay", ">= 0", lambda v: v >= 0),
    "layer_decay": ("--layer_decay", "in (0, 1]", lambda v: 0 < v <= 1),
    "label_smoothing": (None, "in [0, 1)", lambda v: 0 <= v < 1),
    "seed": ("--seed", ">= 0", lambda v: v >= 0),
    "num_workers": ("--num_workers", ">= 0", lambda v: v >= 0),
}
"""Numeric fields: (flag, condition in words, condition); each must be finite and meet its condition."""

INTEGERS = frozenset({"epochs", "batch_size", "seed", "num_workers"})
"""Numeric fields that take whole numbers."""

OPTIONAL = frozenset({"label_fraction", "epochs", "lr", "weight_decay", "layer_decay"})
"""Fields for which None means the task's default (or off)."""
