"""Eq. 2 of Fus-MAE fused: two-way cross-modal attention over a modality-sorted sequence.

What it computes
    q, k, v: (B, L, H, D), tokens modality-sorted per sample: positions ``t < split[b]`` belong to
    modality 1 (S1), the rest to modality 2 (S2). ``split``: int64 (B,), ``0 <= split[b] <= L``.
    o[b, t, h] = sum_u softmax_u(q[b,t,h] . k[b,u,h] / sqrt(D)) v[b,u,h] where u ranges only over
    tokens of the *other* modality of sample b: ``(t < split[b]) != (u < split[b])``.
    Concatenated, this is ``CA(x, y) (+) CA(y, x)`` of Eq. 2 without any torch.cat (SPEC §2).
    A query with no key of the other modality (split 0 or L) gets o = 0 and zero gradients.

dtypes: fp32, fp16, bf16 (and fp64 for the reference). The reference computes scores in the input
dtype, the softmax in fp32 (fp64 for fp64 inputs).
Limits of the reference: it materialises the (B, H, L, L) score tensor; it is the clear definition,
not the fast path.
"""

from __future__ import annotations

import math

import torch


def cross_modal_mask(split: torch.Tensor, length: int) -> torch.Tensor:
    """Boolean (B, L, L) mask: True where query t may attend key u (different modalities)."""
    pos = torch.arange(length, device=split.device)
    first = pos[None, :] < split[:, None]  # (B, L): token is modality 1
    return first[:, :, None] != first[:, None, :]


def cross_modal_attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor
) -> torch.Tensor:
    """Pure-torch reference of the fused Eq. 2 attention; differentiable by autograd.

    Shapes as in the module docstring; returns o with q's shape and dtype.
    """
    b, length, h, d = q.shape
    allowed = cross_modal_mask(split, length)[:, None]  # (B, 1, L, L)
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D)
    acc = torch.promote_types(q.dtype, torch.float32)  # softmax in fp32 (fp64 for an fp64 reference)
    scores = torch.matmul(qh, kh.transpose(-1, -2)).to(acc) * (1.0 / math.sqrt(d))
    scores = scores.masked_fill(~allowed, torch.finfo(acc).min)
    has_key = allowed.any(-1, keepdim=True)  # (B, 1, L, 1)
    probs = torch.softmax(scores, dim=-1) * has_key
    out = torch.matmul(probs.to(q.dtype), vh)
    return out.transpose(1, 2)
