"""The model's linear layers, with the bias (and the MLP's GELU) applied inside the product where no
gradient will be taken on a CPU.

``linear(x, layer)`` is ``layer(x)`` and ``linear(x, layer, gelu=True)`` is ``F.gelu(layer(x))``. On a
CPU, in a call that takes no gradient (inference, embeddings, a frozen encoder's features) and outside
torch.compile, they run oneDNN's linear with the bias, and the GELU, as post-operations of the product
(``torch.ops.mkldnn._linear_pointwise``, the op torch.compile's CPU backend fuses linears into): each is
applied to the fp32 accumulator before the one rounding to the output dtype. ``F.linear`` on a CPU
writes the broadcast bias into the output first and multiplies into it, and the GELU is one more pass
over the output; in bf16 these two passes cost about as much as the product (``bench/step.py``'s
encode rows measure the whole).

The results equal ``layer(x)`` to the rounding of the output dtype: the fused form rounds once where the
unfused one rounds after the product, after the bias and after the GELU (tests/unit/test_linear.py compares
both against an fp64 evaluation). Everywhere else (a gradient will be taken, CUDA, torch.compile,
dtypes other than bf16, a torch without oneDNN, a CPU where oneDNN has no bf16 inner product: one
without AVX-512, where the call raises) it is ``F.linear`` (+ ``F.gelu``) itself.
Autocast is honoured as ``F.linear`` honours it: operands cast to the autocast dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FUSED_DTYPES", "fused_linear_applies", "linear", "mkldnn_bf16_supported"]

FUSED_DTYPES = (torch.bfloat16,)
"""Compute dtypes the fused form runs in: bf16 (in fp32 oneDNN's fused linear measured no faster than
``F.linear`` here; fp16 on a CPU is emulated either way)."""

_ENABLED = True


def mkldnn_bf16_supported() -> bool:
    """Whether this torch's oneDNN runs bf16 products on this CPU (it needs AVX-512; on an AVX2-only
    CPU its bf16 inner product cannot be created and ``_linear_pointwise`` raises)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _pointwise_op():
    """oneDNN's linear with post-operations where it can run the fused dtypes, else None."""
    if not mkldnn_bf16_supported():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


_LINEAR_POINTWISE = _pointwise_op()


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled("cpu") and x.dtype.is_floating_point:
        return torch.get_autocast_dtype("cpu")
    return x.dtype


def fused_linear_applies(x: torch.Tensor, layer: nn.Linear) -> bool:
    """Whether ``linear`` takes the fused form for this input and layer (see the module docstring)."""
    if _LINEAR_POINTWISE is None or not _ENABLED or x.device.type != "cpu":
        return False
    bias = layer.bias
    if torch.is_grad_enabled() and (
        x.requires_grad or layer.weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        return False
    if torch.compiler.is_compiling():
        return False
    if torch.is_autocast_enabled("cpu"):
        return x.dtype.is_floating_point and torch.get_autocast_dtype("cpu") in FUSED_DTYPES
    return x.dtype in FUSED_DTYPES and layer.weight.dtype == x.dtype


def linear(x: torch.Tensor, layer: nn.Linear, *, gelu: bool = False) -> torch.Tensor:
    """``layer(x)``, or ``F.gelu(layer(x))`` (exact GELU) with ``gelu``; fused on a CPU where no
    gradient will be taken (module docstring)."""
    if not fused_linear_applies(x, layer):
        y = layer(x)
        return F.gelu(y) if gelu else y
    dtype = _compute_dtype(x)
    w, b = layer.weight.to(dtype), None if layer.bias is None else layer.bias.to(dtype)
    if gelu:
        return _LINEAR_POINTWISE(x.to(dtype), w, b, "gelu", [], "none")
    return _LINEAR_POINTWISE(x.to(dtype), w, b, "none", [], "")
