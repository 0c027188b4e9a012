"""The AdamW every training loop here builds (pretraining, linear probing, fine-tuning, the benchmarks).

``adamw(params, **kwargs)`` is ``torch.optim.AdamW`` with ``fused=True`` when torch has a fused kernel
for the parameters' device (CPU and CUDA in the tested torch): one pass over each parameter's state
instead of several per-tensor ops, with the same update rule. Elsewhere (a device without one, or
parameters spread over devices) it falls back to torch's default implementation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["adamw"]


def _devices(params: list[Any]) -> set[str]:
    tensors = [p for group in params for p in group["params"]] if isinstance(params[0], dict) else params
    return {t.device.type for t in tensors}


def adamw(params: Iterable[Any], **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, fused=True, **kwargs)`` where supported, else the default AdamW."""
    params = list(params)
    if params and "fused" not in kwargs and "foreach" not in kwargs and len(_devices(params)) == 1:
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except RuntimeError:  # no fused kernel for this device or dtype in this torch
            pass
    return torch.optim.AdamW(params, **kwargs)
