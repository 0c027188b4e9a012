"""``PretrainConfig``: every setting of a pretraining run, checked when the config is made.

The config is saved as ``config.json`` in the run folder and inside every checkpoint. Its checks run
in ``__post_init__`` in a fixed order: fields with a fixed set of values (``CHOICES``), counts with a
lower bound (``AT_LEAST``), then the learning-rate schedule and step limit, then the model fields
(``ModelConfig``). A new check goes into the table or the step it belongs to.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fusmae_fast.config import KERNELS, MASKINGS, VARIANTS, XATTN_WEIGHTS, ModelConfig

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NONFINITE_ACTIONS = ("stop", "skip")
DEVICES = ("auto", "cpu", "cuda")


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
    warmup_epochs: float = 5.0
    """Linear warm-up length in epochs (per-iteration schedule)."""
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
        self._check_choices()
        self._check_counts()
        self._check_schedule()
        self.model_config()  # validates the model fields

    def _check_choices(self) -> None:
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"PretrainConfig.{name} must be one of {choices}, got {getattr(self, name)!r}"
                )

    def _check_counts(self) -> None:
        for name, least in AT_LEAST.items():
            if getattr(self, name) < least:
                raise ValueError(f"PretrainConfig.{name} must be >= {least}, got {getattr(self, name)}")

    def _check_schedule(self) -> None:
        if self.blr <= 0 or (self.lr is not None and self.lr <= 0):
            raise ValueError("PretrainConfig.blr / lr must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("PretrainConfig.max_steps must be >= 1 when given")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(
                f"PretrainConfig.warmup_epochs must lie in [0, epochs], got {self.warmup_epochs}"
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
    "log_every": 1,
    "num_workers": 0,
    "save_every": 0,
    "keep_last": 0,
    "recon_samples": 0,
}
"""Integer fields and their smallest valid value (checked in this order)."""
