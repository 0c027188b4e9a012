"""``PretrainConfig``: every setting of a pretraining run, checked when the config is made.

The config is saved as ``config.json`` in the run folder and inside every checkpoint. Its checks run
in ``__post_init__`` in a fixed order: fields with a fixed set of values (``CHOICES``), counts with a
lower bound (``AT_LEAST``), real numbers (``NUMBERS``: finite and in range), then the warm-up against
the run length, then the model fields (``ModelConfig``). A new check goes into the table or the step
it belongs to. Each message names the field and, where there is one, its command-line flag.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fusmae_fast.config import KERNELS, MASKINGS, VARIANTS, XATTN_WEIGHTS, ModelConfig

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NONFINITE_ACTIONS = ("stop", "skip")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_WARMUP_EPOCHS = 5.0
"""The paper's warm-up; a run shorter than this warms up over the whole run (said in the log)."""


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs; saved as ``config.json`` and inside every checkpoint."""

    data: str | None = None
    """Packed store or raw dataset root; None = the built-in synthetic sample (made once, cached)."""
    output_dir: str = "runs/pretrain"
    """Run folder: log.jsonl, config.json, checkpoints/, loss.png, recon_epochNNN.png, encoder.safetensors."""
    preset: str = "tiny"
    """Model preset: tiny, small or base."""
    variant: str = "xae"
    """'xae' or 'xad'."""
    masking: str = "consistent"
    """'consistent' or 'independent'."""
    xattn_weights: str = "shared"
    """'shared' or 'per_direction' cross-attention weights."""
    mask_ratio: float = 0.75
    """Fraction of the 2N patches masked."""
    norm_pix_loss: bool = True
    """Per-patch normalised targets."""
    kernels: str = "torch"
    """'torch' or 'triton'."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    masked_projection: bool = False
    """Decoders project only the masked patches (``FusMAE.forward(loss_only=True)``, consistent masking):
    25% fewer projection FLOPs, paid for with a gather and a scatter pass. Off by default: the extra
    passes cost more than the FLOPs they save (docs/design.md §2; ``bench/fusion_savings.py``, fusion 5,
    counts the bytes)."""
    precision: str = "auto"
    """'fp32', 'bf16' (autocast), 'fp16' (autocast + GradScaler) or 'auto' (bf16 where the device
    supports it natively: CUDA with bf16, CPUs with AVX512-BF16/AMX; else fp16 on CUDA, fp32 on CPU)."""
    epochs: int = 100
    """Epochs (paper: 100)."""
    batch_size: int = 200
    """Images per process per iteration (paper: 200)."""
    accum_iter: int = 1
    """Iterations accumulated per optimizer step."""
    blr: float = 2.0e-4
    """Base lr: lr = blr x effective batch / 256 (2e-4 gives the paper's 1.5625e-4 at batch 200)."""
    lr: float | None = None
    """Absolute lr; overrides blr when given."""
    min_lr: float = 0.0
    """Floor of the cosine schedule."""
    warmup_epochs: float | None = None
    """Linear warm-up length in epochs (per-iteration schedule); None: ``DEFAULT_WARMUP_EPOCHS``, or
    the whole run when it is shorter (``warmup``)."""
    weight_decay: float = 0.05
    """AdamW weight decay (not on norms, biases, tokens)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    clip_grad: float | None = None
    """Clip the gradient norm to this value (off when None)."""
    seed: int = 0
    """Run seed: sampler order, masks, initialisation."""
    num_workers: int = 2
    """DataLoader worker processes per rank."""
    save_every: int = 0
    """Also checkpoint every N optimizer steps (0: only at epoch ends)."""
    keep_last: int = 3
    """Checkpoints kept."""
    resume: str | None = None
    """'auto' (newest valid checkpoint in output_dir, if any) or a checkpoint path."""
    on_nonfinite: str = "stop"
    """Non-finite loss: 'stop' (raise, saving nothing) or 'skip' (drop the batch, count it)."""
    max_skips: int = 10
    """``on_nonfinite='skip'``: stop (non-zero exit) after this many consecutive skipped batches."""
    suspect_steps: int | None = None
    """On a non-finite loss, the checkpoints saved in the last K optimizer steps are marked suspect
    in their sidecar (``--resume auto`` passes over them); None: one save interval (``save_every``,
    or an epoch's steps when that is 0)."""
    allow_changes: tuple[str, ...] = ()
    """Settings a resume may change although they alter the run's course (names as the refusal
    lists them, or 'all'); the changes are said in the log."""
    log_every: int = 10
    """Write a log.jsonl line every N optimizer steps (and at each epoch end)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps in all (smoke tests, benchmarks)."""
    recon_samples: int = 4
    """Fixed validation samples drawn in recon_epochNNN.png (0: no reconstruction figures)."""
    progress: bool = True
    """tqdm progress bars (only on rank 0 and a TTY)."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu' or 'cuda'."""

    def __post_init__(self) -> None:
        self.allow_changes = tuple(self.allow_changes)
        self._check_choices()
        self._check_counts()
        self._check_numbers()
        self._check_schedule()
        self.model_config()  # validates the model fields

    @property
    def warmup(self) -> float:
        """The warm-up in epochs: ``warmup_epochs``, or the default clamped to the run."""
        if self.warmup_epochs is not None:
            return float(self.warmup_epochs)
        return min(DEFAULT_WARMUP_EPOCHS, float(self.epochs))

    def warmup_note(self) -> str | None:
        """One line when the default warm-up was clamped to a shorter run (None otherwise)."""
        if self.warmup_epochs is None and self.epochs < DEFAULT_WARMUP_EPOCHS:
            return (
                f"warm-up: the default {DEFAULT_WARMUP_EPOCHS:g} epochs is longer than the run; warming up "
                f"over all {self.epochs} epoch(s) (set --warmup_epochs to choose)"
            )
        return None

    def _check_choices(self) -> None:
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"PretrainConfig.{name} must be one of {choices}, got {getattr(self, name)!r}"
                )

    def _check_counts(self) -> None:
        for name, least in AT_LEAST.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{field_name(name)} must be an integer >= {least}, got {value!r}")

    def _check_numbers(self) -> None:
        for name, (wanted, ok) in NUMBERS.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{field_name(name)} must be a number {wanted}, got {value!r}")
            if not math.isfinite(value) or not ok(value):
                raise ValueError(f"{field_name(name)} must be a finite number {wanted}, got {value}")

    def _check_schedule(self) -> None:
        if self.warmup > self.epochs:
            raise ValueError(
                f"{field_name('warmup_epochs')} must lie in [0, epochs] (epochs = {self.epochs}), "
                f"got {self.warmup_epochs}"
            )

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_name(
            self.preset,
            variant=self.variant,
            masking=self.masking,
            xattn_weights=self.xattn_weights,
            mask_ratio=self.mask_ratio,
            norm_pix_loss=self.norm_pix_loss,
            kernels=self.kernels,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES: dict[str, tuple[str, ...]] = {
    "variant": VARIANTS,
    "masking": MASKINGS,
    "kernels": KERNELS,
    "xattn_weights": XATTN_WEIGHTS,
    "precision": PRECISIONS,
    "on_nonfinite": NONFINITE_ACTIONS,
    "device": DEVICES,
}
"""Fields that take one of a fixed set of values (checked in this order)."""

AT_LEAST: dict[str, int] = {
    "epochs": 1,
    "batch_size": 1,
    "accum_iter": 1,
    "seed": 0,
    "log_every": 1,
    "num_workers": 0,
    "save_every": 0,
    "keep_last": 0,
    "max_steps": 1,
    "max_skips": 1,
    "suspect_steps": 1,
    "recon_samples": 0,
}
"""Integer fields and their smallest valid value (checked in this order)."""

NUMBERS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "mask_ratio": ("in (0, 1)", lambda v: 0 < v < 1),
    "blr": ("> 0", lambda v: v > 0),
    "lr": ("> 0", lambda v: v > 0),
    "min_lr": (">= 0", lambda v: v >= 0),
    "warmup_epochs": (">= 0", lambda v: v >= 0),
    "weight_decay": (">= 0", lambda v: v >= 0),
    "beta1": ("in [0, 1)", lambda v: 0 <= v < 1),
    "beta2": ("in [0, 1)", lambda v: 0 <= v < 1),
    "clip_grad": ("> 0", lambda v: v > 0),
}
"""Real-valued fields: each must be finite and satisfy its condition (checked in this order)."""

OPTIONAL = frozenset({"lr", "warmup_epochs", "clip_grad", "max_steps", "suspect_steps"})
"""Fields for which None means 'not given' (their checks apply only to a value)."""

NO_FLAG = frozenset({"beta1", "beta2"})
"""Fields without a command-line flag (set only from Python)."""


def field_name(name: str) -> str:
    """How messages name a field: ``PretrainConfig.lr (--lr)``, the flag left out where there is none."""
    return f"PretrainConfig.{name}" if name in NO_FLAG else f"PretrainConfig.{name} (--{name})"
