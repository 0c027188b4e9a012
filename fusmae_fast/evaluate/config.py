"""``EvalConfig``: one evaluation run (a task, a checkpoint and/or a random baseline, some inputs)."""

from __future__ import annotations

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
        if self.label_fraction is not None and not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"EvalConfig.label_fraction must lie in (0, 1], got {self.label_fraction}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError("EvalConfig.epochs must be >= 1")
        if self.pool not in POOLS:
            raise ValueError(f"EvalConfig.pool must be 'cls' or 'mean', got {self.pool!r}")
        if self.kernels not in KERNELS:
            raise ValueError(f"EvalConfig.kernels must be one of {KERNELS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"EvalConfig.precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ValueError("EvalConfig.layer_decay must lie in (0, 1]")
        if self.batch_size < 1:
            raise ValueError("EvalConfig.batch_size must be >= 1")

    def setting(self, name: str) -> Any:
        """``name`` (epochs, label_fraction, lr, weight_decay) as given, else the task's default."""
        value = getattr(self, name)
        return DEFAULTS[self.task][name] if value is None else value
