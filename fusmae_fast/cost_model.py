"""Cost models of the ops: the useful FLOPs and the compulsory memory traffic the benchmarks divide by.

Cross-modal attention (Eq. 2; per sample with n1 = split, n2 = L - split, per head, head dim D)
    Useful score entries: 2 * n1 * n2 (each pair, both directions) instead of L^2 for masked dense
    attention. Forward FLOPs: 2 * n1 * n2 * (2D for QK^T + 2D for PV) = 8 * n1 * n2 * D.
    Backward FLOPs: 2.5 x forward (recompute QK^T, dV, dP, dS->dQ, dS->dK: 5 matmuls instead of 2).
    Compulsory bytes of the Triton path, forward: read q, k, v, write o: 4 * L * D * esize, + 4 * L
    bytes of log-sum-exp. Backward: read q, k, v, o, dO, write dq, dk, dv: 8 * L * D * esize,
    + lse/Delta (12 * L bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["cross_modal_attention_bytes", "cross_modal_attention_flops"]


def _split_list(split: torch.Tensor | Sequence[int]) -> list[int]:
    if isinstance(split, torch.Tensor):
        return [int(s) for s in split.reshape(-1).tolist()]
    return [int(s) for s in split]


def cross_modal_attention_flops(
    split: torch.Tensor | Sequence[int], L: int, H: int, D: int, *, backward: bool = False
) -> int:
    """Useful FLOPs of the op: only the 2 * n1 * n2 cross-modal score entries per head count.

    Forward: sum_b 8 * n1 * n2 * D * H (QK^T and PV, 2 FLOPs per multiply-add). With
    ``backward=True`` the backward's 2.5 x forward (5 matmuls) is returned instead.
    """
    pairs = sum(2 * s * (L - s) for s in _split_list(split))
    fwd = pairs * 4 * D * H
    return fwd * 5 // 2 if backward else fwd


def cross_modal_attention_bytes(
    batch: int, L: int, H: int, D: int, dtype: torch.dtype, *, backward: bool = False
) -> int:
    """Compulsory HBM traffic of the Triton path (each tensor read or written once)."""
    esize = torch.empty((), dtype=dtype).element_size()
    rows = batch * L * H
    if backward:  # q, k, v, o, dO read; dq, dk, dv written; lse read; Delta written then read twice
        return rows * (8 * D * esize + 4 * 4)
    return rows * (4 * D * esize + 4)  # q, k, v read; o and lse written
