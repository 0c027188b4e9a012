"""The attention core of the torch path: softmax(q k^T / sqrt(D)) v in the form that is fastest here.

``attention(q, k, v, mask=None)`` takes (..., Lq, D), (..., Lk, D), (..., Lk, D) and an optional boolean
mask broadcastable to (..., Lq, Lk) (True = may attend). It runs one of two forms, equal up to rounding
(tested against an fp64 evaluation, gradients included):

explicit
    two batched matmuls and a softmax, as an ``autograd.Function`` with a hand-written backward
    (dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(dP P)), dQ = dS K / sqrt(D), dK = dS^T Q / sqrt(D)).
    The scale is applied to the smaller of q and the scores, operands are made contiguous once, and the
    probabilities P are the only score-sized tensor kept for the backward. Numerically it is the
    textbook attention in the input dtype (scores rounded to it, softmax accumulated in fp32): the
    baseline the low-precision parity rule compares kernels against.
sdpa
    ``torch.nn.functional.scaled_dot_product_attention`` (a fused flash kernel on CPU and CUDA).

``explicit_is_faster`` holds the choice: on CPU, bf16/fp16 with at most ``EXPLICIT_MAX_KEYS`` keys
(the flash CPU kernel, its backward most of all, is several times slower there); fp32 only for the
cross-modal block's two directions batched into one call (``paired``) when a gradient will be taken,
at head dim >= 64 and at most ``EXPLICIT_FP32_MAX_KEYS`` keys (one call instead of two, no
concatenation, and a backward that beats the flash one; a forward alone is faster in SDPA, which never
writes the scores out, and for self-attention in fp32 the two forms are within noise of each other or
SDPA wins: fp32 batched matmuls with a short inner dimension are slow); on CUDA always SDPA.
``bench/xattn.py`` and ``bench/step.py`` measure both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "EXPLICIT_FP32_MAX_KEYS",
    "EXPLICIT_MAX_KEYS",
    "attention",
    "explicit_attention",
    "explicit_is_faster",
]

EXPLICIT_MAX_KEYS = 1024
"""Longest key sequence the explicit form is chosen for in bf16/fp16 on CPU (its scores are Lq x Lk)."""
EXPLICIT_FP32_MAX_KEYS = 256
"""Longest key sequence of the paired fp32 call the explicit form is chosen for (head dim >= 64, with a
gradient to take)."""


def explicit_is_faster(q: torch.Tensor, k: torch.Tensor, *, paired: bool = False) -> bool:
    """Whether the explicit form beats SDPA for these operands (see the module docstring); ``paired``:
    the two directions of the cross-modal attention as one call, k holding one direction's keys. A
    gradient will be taken when grad mode is on and q or k requires one."""
    if q.device.type != "cpu":
        return False
    keys, head_dim = k.shape[-2], q.shape[-1]
    if q.dtype in (torch.bfloat16, torch.float16):
        return keys <= EXPLICIT_MAX_KEYS
    if not (paired and q.dtype == torch.float32 and head_dim >= 64 and keys <= EXPLICIT_FP32_MAX_KEYS):
        return False
    return torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)


class _ExplicitAttention(torch.autograd.Function):
    """softmax(q k^T * scale [masked]) v with a hand-written backward that keeps only P."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scale: float):  # type: ignore[override]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        scale_q = q.shape[-2] * q.shape[-1] <= q.shape[-2] * k.shape[-2]  # scale the smaller tensor
        with torch.autocast(q.device.type, enabled=False):
            qs = q * scale if scale_q else q
            s = torch.matmul(qs, k.transpose(-2, -1))
            if not scale_q:
                s.mul_(scale)
            if mask is not None:
                s.masked_fill_(~mask, float("-inf"))
            p = torch.softmax(s, dim=-1)
            del s
            o = torch.matmul(p, v)
        ctx.save_for_backward(q, k, v, p)
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, do):  # type: ignore[override]
        q, k, v, p = ctx.saved_tensors
        do = do.contiguous().to(v.dtype)
        with torch.autocast(do.device.type, enabled=False):
            dv = torch.matmul(p.transpose(-2, -1), do) if ctx.needs_input_grad[2] else None
            dp = torch.matmul(do, v.transpose(-2, -1))
            ds = torch._softmax_backward_data(dp, p, -1, p.dtype)
            del dp
            dq = torch.matmul(ds, k).mul_(ctx.scale) if ctx.needs_input_grad[0] else None
            dk = torch.matmul(ds.transpose(-2, -1), q).mul_(ctx.scale) if ctx.needs_input_grad[1] else None
        return dq, dk, dv, None, None


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The explicit form (module docstring); every query row needs at least one allowed key."""
    if torch.is_autocast_enabled(q.device.type):
        dt = torch.get_autocast_dtype(q.device.type)
        q, k, v = q.to(dt), k.to(dt), v.to(dt)
    return _ExplicitAttention.apply(q, k, v, mask, 1.0 / math.sqrt(q.shape[-1]))


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v in the faster form for these operands; every query row needs at least
    one allowed key (rows without one are the caller's to zero, as in ``cross_modal_attention_torch``)."""
    if explicit_is_faster(q, k):
        return explicit_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
