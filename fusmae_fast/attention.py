"""The attention core of the torch path: softmax(q k^T / sqrt(D)) v in the form that is fastest here.

``attention(q, k, v, mask=None)`` takes (..., Lq, D), (..., Lk, D), (..., Lk, D) and an optional boolean
mask broadcastable to (..., Lq, Lk) (True = may attend). It runs one of two forms, equal up to rounding
(tested against an fp64 evaluation, gradients included):

explicit
    two batched matmuls and a softmax, as an ``autograd.Function`` with a hand-written backward
    (dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(dP P)), dQ = dS K / sqrt(D), dK = dS^T Q / sqrt(D)).
    The scale is applied by the GEMMs themselves (``baddbmm``'s alpha for the scores, dQ and dK: no
    pass of its own), a mask is added as 0 / -inf, operands are made contiguous (N, L, D) batches once,
    and the probabilities P are the only score-sized tensor kept for the backward. Numerically it is the
    textbook attention in the input dtype (scores rounded to it, softmax accumulated in fp32): the
    baseline the low-precision parity rule compares kernels against.
sdpa
    ``torch.nn.functional.scaled_dot_product_attention`` (a fused flash kernel on CPU and CUDA).

Which form runs (CPU only; on CUDA always SDPA):

- the faster one measured on this machine, on the first call of each shape (``fusmae_fast.form_timing``
  times the forward where no gradient will be taken, the forward and backward where one will, the
  latter only while the probabilities are at most ``TIMED_GRAD_MAX_SCORE_BYTES``): the fastest form
  depends on the CPU. SDPA's flash kernel packs its bf16 products for AMX where the CPU has it and is
  slower than the explicit form where it has not; in fp32 the hand-written backward beats the flash
  one at some shapes on one CPU and loses or ties on another;
- under torch.compile, in deterministic mode, with timing off or past the caps, the rules of
  ``explicit_is_faster``, made from the operands:

- bf16/fp16: explicit up to ``EXPLICIT_MAX_KEYS`` keys (the flash CPU kernel's backward is several
  times slower, with or without AMX);
- fp32, the cross-modal block's two directions batched into one call (``paired``: one call instead
  of two, no concatenation) at head dim >= 64: explicit up to ``EXPLICIT_FP32_MAX_KEYS`` keys when a
  gradient will be taken (the hand-written backward beats the flash one), up to
  ``EXPLICIT_FP32_FWD_MAX_KEYS`` for a forward alone (past that SDPA, which never writes the scores
  out, wins);
- fp32 with a mask (the ragged cross-modal mask): explicit up to ``EXPLICIT_FP32_MAX_KEYS`` keys when
  a gradient will be taken (SDPA's flash kernel turns the mask into a float bias and its backward is
  the slow part), SDPA for a forward alone;
- fp32 self-attention: SDPA (fp32 batched matmuls with a short inner dimension are slow; on the CPU
  these rules were measured on the two forms are within noise of each other or SDPA wins);
- never when the probabilities would exceed ``EXPLICIT_MAX_SCORE_BYTES`` (the explicit form keeps them
  for the backward; SDPA's memory is linear in the keys).

``bench/xattn.py`` and ``bench/step.py`` measure both.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from fusmae_fast.form_timing import fastest, grad_will_be_taken, may_time, operands_key

__all__ = [
    "EXPLICIT_FP32_FWD_MAX_KEYS",
    "EXPLICIT_FP32_MAX_KEYS",
    "EXPLICIT_MAX_KEYS",
    "EXPLICIT_MAX_SCORE_BYTES",
    "SOFTMAX_FP32_BELOW_KEYS",
    "TIMED_GRAD_MAX_SCORE_BYTES",
    "attention",
    "explicit_attention",
    "explicit_fits",
    "explicit_is_faster",
    "may_time_forms",
    "sdpa_attention",
    "softmax_via_fp32",
]

EXPLICIT_MAX_KEYS = 1024
"""Longest key sequence the explicit form is chosen for in bf16/fp16 on CPU (its scores are Lq x Lk)."""
EXPLICIT_FP32_MAX_KEYS = 512
"""Longest key sequence of a paired (head dim >= 64) or masked fp32 call the explicit form is chosen for
when a gradient will be taken."""
EXPLICIT_FP32_FWD_MAX_KEYS = 64
"""Longest key sequence of the paired fp32 call the explicit form is chosen for in a forward alone
(head dim >= 64); Fus-MAE's encoder at 75 % masking has 56 keys per direction."""
EXPLICIT_MAX_SCORE_BYTES = 1 << 30
"""Largest probabilities tensor (batch x heads x Lq x Lk x element size) the explicit form may keep."""
TIMED_GRAD_MAX_SCORE_BYTES = 1 << 28
"""Largest probabilities tensor of a call that takes a gradient whose form is picked by timing (the
timing runs each form's forward and backward several times on the first call); larger ones get the
rules."""
SOFTMAX_FP32_BELOW_KEYS = 96
"""Rows shorter than this (and not a multiple of 32) of bf16/fp16 scores take their softmax in fp32
(``softmax_via_fp32``); Fus-MAE's cross-modal attention at 75 % masking has 56 keys per direction."""


def _score_bytes(q: torch.Tensor, keys: int) -> int:
    """Bytes of the probabilities of q's queries over ``keys`` keys each, in q's dtype."""
    return q.shape[:-1].numel() * keys * q.element_size()


def explicit_fits(q: torch.Tensor, k: torch.Tensor, keys: int | None = None) -> bool:
    """Whether the explicit form may run on these operands at all: CPU tensors of a floating dtype whose
    probabilities fit ``EXPLICIT_MAX_SCORE_BYTES``; ``keys``: the keys per query (default k's length)."""
    if not q.is_cpu or not q.dtype.is_floating_point:
        return False
    return _score_bytes(q, k.shape[-2] if keys is None else keys) <= EXPLICIT_MAX_SCORE_BYTES


def explicit_is_faster(
    q: torch.Tensor, k: torch.Tensor, *, paired: bool = False, masked: bool = False
) -> bool:
    """Whether the explicit form beats SDPA for these operands by the rules (see the module
    docstring); ``paired``: the two directions of the cross-modal attention as one call, k holding one
    direction's keys; ``masked``: a boolean mask comes with them. A gradient will be taken when grad
    mode is on and q or k requires one."""
    if not explicit_fits(q, k):
        return False
    keys, head_dim = k.shape[-2], q.shape[-1]
    if q.dtype in (torch.bfloat16, torch.float16):
        return keys <= EXPLICIT_MAX_KEYS
    if q.dtype != torch.float32:
        return False
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    if paired and head_dim >= 64:
        return keys <= (EXPLICIT_FP32_MAX_KEYS if grad else EXPLICIT_FP32_FWD_MAX_KEYS)
    return masked and grad and keys <= EXPLICIT_FP32_MAX_KEYS


def _lead_shape(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Size:
    """The broadcast leading dims of q, k, v (their own when equal, the usual case: no broadcast
    arithmetic, which costs more in Python than a small attention's products)."""
    lead = q.shape[:-2]
    if lead == k.shape[:-2] == v.shape[:-2]:
        return lead
    return torch.broadcast_shapes(lead, k.shape[:-2], v.shape[:-2])


def _batched(t: torch.Tensor, lead: torch.Size) -> torch.Tensor:
    """t (..., L, D) broadcast to the leading dims ``lead`` as one contiguous (N, L, D) batch (a view
    when t is already contiguous at that shape)."""
    if t.shape[:-2] != lead:
        t = t.expand(*lead, *t.shape[-2:])
    return t.reshape(-1, *t.shape[-2:]).contiguous()


def _scaled_bmm(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * (a @ b) for (N, n, k) @ (N, k, m), the scale applied by the GEMM itself (beta 0: no input
    is read) instead of in a pass of its own over the product."""
    return torch.baddbmm(a.new_zeros(()), a, b, beta=0, alpha=scale)


def _no_autocast(device_type: str):
    """A context with autocast off (the operands are in their compute dtype already), or a null one
    when it is off anyway (entering autocast's context costs more than a small attention's products)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def softmax_via_fp32(keys: int, dtype: torch.dtype) -> bool:
    """Whether ``_softmax`` computes a softmax over rows of ``keys`` scores of ``dtype`` in fp32: bf16
    and fp16 rows shorter than ``SOFTMAX_FP32_BELOW_KEYS`` whose length is not a multiple of 32. There
    torch's 16-bit CPU softmax kernel (AVX-512, torch 2.13) is slower than a softmax into fp32 followed
    by a rounding pass, the more so the shorter the row; elsewhere it is faster. The backward stays in
    the 16-bit dtype, whose kernel is faster at every length measured."""
    return dtype in (torch.bfloat16, torch.float16) and keys < SOFTMAX_FP32_BELOW_KEYS and keys % 32 != 0


def _softmax(s: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim in s's dtype, computed in fp32 where ``softmax_via_fp32`` says so (the
    16-bit kernel also computes in fp32 and rounds once: the two agree to the rounding)."""
    if s.device.type == "cpu" and softmax_via_fp32(s.shape[-1], s.dtype):
        return torch.softmax(s, dim=-1, dtype=torch.float32).to(s.dtype)
    return torch.softmax(s, dim=-1)


def _explicit_forward(q, k, v, mask, scale: float, lead: torch.Size):
    """softmax(q k^T * scale [masked]) v of the explicit form: the output (..., Lq, D), and the
    (N, L, D) batches of q, k, v and the probabilities P (N, Lq, Lk) the backward needs."""
    q3, k3, v3 = (_batched(t, lead) for t in (q, k, v))
    with _no_autocast(q.device.type):
        s = _scaled_bmm(q3, k3.transpose(1, 2), scale).view(*lead, q.shape[-2], k.shape[-2])
        if mask is not None:
            # an additive mask at the mask's (broadcast) size, then one add over the scores: a
            # boolean masked_fill_ broadcast over the heads is many times slower on a CPU
            s.add_(torch.zeros(mask.shape, dtype=s.dtype, device=s.device).masked_fill_(~mask, -math.inf))
        p = _softmax(s).view(-1, *s.shape[-2:])
        del s
        o = torch.bmm(p, v3)
    return o.view(*lead, *o.shape[-2:]), (q3, k3, v3, p)


class _ExplicitAttention(torch.autograd.Function):
    """softmax(q k^T * scale [masked]) v with a hand-written backward that keeps only P."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scale: float, lead: torch.Size):  # type: ignore[override]
        o, saved = _explicit_forward(q, k, v, mask, scale, lead)
        ctx.save_for_backward(*saved)
        ctx.scale, ctx.lead = scale, lead
        return o

    @staticmethod
    def backward(ctx, do):  # type: ignore[override]
        q3, k3, v3, p = ctx.saved_tensors
        do = _batched(do.to(v3.dtype), ctx.lead)
        with _no_autocast(do.device.type):
            dv = torch.bmm(p.transpose(1, 2), do) if ctx.needs_input_grad[2] else None
            dp = torch.bmm(do, v3.transpose(1, 2))
            ds = torch._softmax_backward_data(dp, p, -1, p.dtype)
            del dp
            dq = _scaled_bmm(ds, k3, ctx.scale) if ctx.needs_input_grad[0] else None
            dk = _scaled_bmm(ds.transpose(1, 2), q3, ctx.scale) if ctx.needs_input_grad[1] else None
        # autograd sums a gradient over the dims an input was broadcast along
        grads = (g if g is None else g.view(*ctx.lead, *g.shape[-2:]) for g in (dq, dk, dv))
        return (*grads, None, None, None)


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The explicit form (module docstring); every query row needs at least one allowed key. Where no
    gradient will be taken it runs without an autograd node (nothing kept for a backward)."""
    if torch.is_autocast_enabled(q.device.type):
        dt = torch.get_autocast_dtype(q.device.type)
        q, k, v = q.to(dt), k.to(dt), v.to(dt)
    scale, lead = 1.0 / math.sqrt(q.shape[-1]), _lead_shape(q, k, v)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _ExplicitAttention.apply(q, k, v, mask, scale, lead)
    return _explicit_forward(q, k, v, mask, scale, lead)[0]


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The sdpa form (module docstring): ``F.scaled_dot_product_attention`` with the same arguments as
    ``explicit_attention``."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def may_time_forms(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: int | None = None) -> bool:
    """Whether a call may pick its form by timing (``fusmae_fast.form_timing``): the explicit form fits,
    ``may_time`` allows it, and where a gradient will be taken (the timing then runs every form's
    backward too) the probabilities are at most ``TIMED_GRAD_MAX_SCORE_BYTES``. ``keys``: the keys per
    query (default k's length; the cross-modal call's one direction)."""
    keys = k.shape[-2] if keys is None else keys
    if not explicit_fits(q, k, keys) or not may_time(q, k, v):
        return False
    return not grad_will_be_taken(q, k, v) or _score_bytes(q, keys) <= TIMED_GRAD_MAX_SCORE_BYTES


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v in the faster form for these operands (timed once per shape and grad
    mode where ``may_time_forms`` allows, else by the rules); every query row needs at least one allowed
    key (rows without one are the caller's to zero, as in ``cross_modal_attention_torch``)."""

    def by_rules() -> torch.Tensor:
        if explicit_is_faster(q, k, masked=mask is not None):
            return explicit_attention(q, k, v, mask)
        return sdpa_attention(q, k, v, mask)

    if not may_time_forms(q, k, v):
        return by_rules()
    forms = {"sdpa": sdpa_attention, "explicit": explicit_attention}
    return fastest(("attention", operands_key(q, k, v, mask)), forms, (q, k, v, mask), by_rules)
