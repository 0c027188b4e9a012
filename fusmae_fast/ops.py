"""The op API the model calls (docs/design.md §3); every op dispatches on ``kernels="torch" | "triton"``.

``torch`` runs anywhere and is differentiable by autograd: the ``*_ref`` functions of
``fusmae_fast.kernels`` (pure PyTorch), except where ``fusmae_fast.torch_ops`` holds a faster form of
the same op (tested equal to the ref): ``cross_modal_attention_torch`` for the cross-modal attention
and ``masked_mse_torch`` for the loss. ``triton`` calls the Triton implementation of the op's kernel
module (``*_triton``), which runs on CUDA tensors, and on CPU tensors only under Triton's interpreter
(``TRITON_INTERPRET=1`` set before the kernels are imported; the tests do this).

This module and ``fusmae_fast.torch_ops`` are the only importers of the kernel modules
(``fusmae_fast.device`` and ``fusmae_fast.form_timing`` read two flags of ``triton_runtime``: the
interpreter, deterministic mode). ``set_form_timing`` turns off the timing of the torch path's forms
(``fusmae_fast.form_timing``). Inputs are validated here, once, so that both paths see the same checked
arguments and users get one clear error for bad input. Checks of values (index and split ranges): on CPU
tensors one min/max pass and host read per checked tensor and a ValueError (the cross-modal attention's
torch path reuses the split's min and max); on CUDA tensors fused into one flag per call
(``triton_runtime.raise_if_any``) with no host sync (an asynchronous device-side assertion) unless debug
checks are on (``FUSMAE_FAST_DEBUG_CHECKS=1`` or ``set_debug_checks(True)``: one read per call and the
ValueError). Skipped where torch.compile traces the call, except the distinct-index checks of the
Triton backward passes, which their backward ops then run.
"""

from __future__ import annotations

from typing import Literal

import torch

from fusmae_fast.config import KERNELS
from fusmae_fast.form_timing import set_form_timing
from fusmae_fast.kernels.cross_modal_attention import cross_modal_attention_triton
from fusmae_fast.kernels.masked_loss import masked_mse_triton
from fusmae_fast.kernels.masked_patch_embed import masked_patch_embed_ref, masked_patch_embed_triton
from fusmae_fast.kernels.token_gather import gather_tokens_ref, gather_tokens_triton
from fusmae_fast.kernels.token_scatter import scatter_tokens_ref, scatter_tokens_triton
from fusmae_fast.kernels.triton_runtime import (
    FLOAT_DTYPES,
    Check,
    interpreting,
    raise_if_any,
    set_debug_checks,
    set_deterministic,
    value_checks_enabled,
)
from fusmae_fast.torch_ops import cross_modal_attention_torch, masked_mse_torch

Kernels = Literal["torch", "triton"]

__all__ = [
    "cross_modal_attention",
    "gather_tokens",
    "masked_mse",
    "masked_patch_embed",
    "scatter_tokens",
    "set_debug_checks",
    "set_deterministic",
    "set_form_timing",
]


def _check_triton_device(device: torch.device) -> None:
    """The Triton kernels run on CUDA tensors, or on CPU tensors under Triton's interpreter."""
    if device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"kernels='triton' needs CUDA tensors (got {device}); on a CPU use kernels='torch', or set "
            "TRITON_INTERPRET=1 before importing fusmae_fast to run the kernels in Triton's interpreter "
            "(slow, for testing only)."
        )


def _check_kernels(kernels: str) -> None:
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")


def _check_float(name: str, t: torch.Tensor, kernels: str) -> None:
    """Both paths take FLOAT_DTYPES (fp32, fp16, bf16); the torch path also float64 (the tests' reference)."""
    if t.dtype in FLOAT_DTYPES or (kernels == "torch" and t.dtype == torch.float64):
        return
    allowed = "float32, float16 or bfloat16" + (
        " (or float64 with kernels='torch')" if kernels == "triton" else ""
    )
    raise TypeError(f"{name} must be {allowed}, got {t.dtype}")


def _check_same_device(**tensors: torch.Tensor | None) -> None:
    present = [t for t in tensors.values() if t is not None]
    first = present[0].device if present else None
    if any(t.device != first for t in present[1:]):
        devices = {n: t.device for n, t in tensors.items() if t is not None}
        raise ValueError(f"all tensors must be on one device, got {devices}")


def _check_index(
    name: str, ids: torch.Tensor, batch: int, upper: int, allow_empty_slot: bool = False
) -> None:
    if ids.dtype != torch.int64:
        raise TypeError(f"{name} must be int64, got {ids.dtype}")
    if ids.dim() != 2 or ids.shape[0] != batch:
        raise ValueError(f"{name} must have shape (B={batch}, K), got {tuple(ids.shape)}")
    lo = -1 if allow_empty_slot else 0
    _check_range(name, ids, lo, upper, f"[{lo}, {upper})")


SMALL_CHECK_NUMEL = 512
"""CPU tensors up to this many values are range-checked on a host list (``_check_range``)."""


def _check_range(name: str, t: torch.Tensor, lo: int, end: int, interval: str) -> tuple[int, int] | None:
    """lo <= t < end everywhere. On CPU: one min/max pass and a host read, which also returns (min,
    max) for the caller (None when t is empty or inside torch.compile); on CUDA: one fused check with
    no host sync (``raise_if_any``), returning None."""
    if not t.numel() or not value_checks_enabled():
        return None

    def error(bounds: tuple[int, int]) -> Exception:
        return ValueError(f"{name} values must lie in {interval}, got [{bounds[0]}, {bounds[1]}]")

    if not t.is_cuda:
        if t.numel() <= SMALL_CHECK_NUMEL:  # a split (B values): a host list is cheaper than a kernel
            values = t.reshape(-1).tolist()
            bounds = (min(values), max(values))
        else:
            mn, mx = torch.aminmax(t)
            bounds = (int(mn), int(mx))
        if bounds[0] < lo or bounds[1] >= end:
            raise error(bounds)
        return bounds
    bad = ((t < lo) | (t >= end)).any()
    checks: list[Check] = [(bad, lambda: error((int(t.min()), int(t.max()))))]
    raise_if_any(checks)
    return None


def cross_modal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: torch.Tensor, *, kernels: Kernels = "torch"
) -> torch.Tensor:
    """Two-way cross-modal attention (Eq. 2) over modality-sorted tokens.

    q, k, v: (B, L, H, D); split: int64 (B,) with 0 <= split[b] <= L (kept S1 tokens come first).
    Query t attends only keys of the other modality; rows with no such key get 0. Scale 1/sqrt(D).
    Returns o (B, L, H, D) in the concatenated layout.
    """
    _check_kernels(kernels)
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            "q, k, v must all have shape (B, L, H, D); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_float(name, t, kernels)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    _check_same_device(q=q, k=k, v=v, split=split)
    if split.dtype != torch.int64 or split.shape != (q.shape[0],):
        raise ValueError(
            f"split must be int64 of shape (B={q.shape[0]},), got {split.dtype} {tuple(split.shape)}"
        )
    bounds = _check_range("split", split, 0, q.shape[1] + 1, f"[0, L={q.shape[1]}]")
    if kernels == "torch":
        return cross_modal_attention_torch(q, k, v, split, bounds)
    _check_triton_device(q.device)
    return cross_modal_attention_triton(q, k, v, split)


def masked_patch_embed(
    img: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pos: torch.Tensor,
    ids_keep: torch.Tensor,
    patch: int,
    *,
    kernels: Kernels = "torch",
) -> torch.Tensor:
    """Project only the kept patches of ``img``: (B, K, C) = W . patch + bias + pos[ids_keep].

    img (B, C_in, H, W); weight (C, C_in, P, P); bias (C,); pos (N, C); ids_keep (B, K) int64 raster
    patch indices, or -1 for an empty slot (its row is 0; used for ragged per-modality keeps).
    """
    _check_kernels(kernels)
    if img.dim() != 4:
        raise ValueError(f"img must be (B, C_in, H, W), got {tuple(img.shape)}")
    b, c_in, hh, ww = img.shape
    if hh % patch or ww % patch:
        raise ValueError(f"image size {hh}x{ww} is not divisible by the patch size {patch}")
    if weight.shape[1:] != (c_in, patch, patch):
        raise ValueError(
            f"weight must be (C, C_in={c_in}, P={patch}, P={patch}), got {tuple(weight.shape)}: "
            f"does the image have the channel count the model expects?"
        )
    n = (hh // patch) * (ww // patch)
    if bias.shape != (weight.shape[0],) or pos.shape != (n, weight.shape[0]):
        raise ValueError(f"bias must be ({weight.shape[0]},) and pos ({n}, {weight.shape[0]})")
    for name, t in (("img", img), ("weight", weight), ("bias", bias), ("pos", pos)):
        _check_float(name, t, kernels)
    _check_same_device(img=img, weight=weight, bias=bias, pos=pos, ids_keep=ids_keep)
    _check_index("ids_keep", ids_keep, b, n, allow_empty_slot=True)
    if kernels == "torch":
        return masked_patch_embed_ref(img, weight, bias, pos, ids_keep, patch)
    _check_triton_device(img.device)
    return masked_patch_embed_triton(img, weight, bias, pos, ids_keep, patch)


def gather_tokens(
    x: torch.Tensor, ids_keep: torch.Tensor, pos: torch.Tensor | None = None, *, kernels: Kernels = "torch"
) -> torch.Tensor:
    """out[b, j] = x[b, ids_keep[b, j]] (+ pos[ids_keep[b, j]]); x (B, N, C), ids_keep (B, K)."""
    _check_kernels(kernels)
    if x.dim() != 3:
        raise ValueError(f"x must be (B, N, C), got {tuple(x.shape)}")
    _check_index("ids_keep", ids_keep, x.shape[0], x.shape[1])
    if pos is not None and pos.shape != x.shape[1:]:
        raise ValueError(f"pos must be {tuple(x.shape[1:])}, got {tuple(pos.shape)}")
    _check_same_device(x=x, ids_keep=ids_keep, pos=pos)
    if kernels == "torch":
        return gather_tokens_ref(x, ids_keep, pos)
    _check_triton_device(x.device)
    return gather_tokens_triton(x, ids_keep, pos)


def scatter_tokens(
    latent: torch.Tensor,
    ids_restore: torch.Tensor,
    mask_token: torch.Tensor,
    pos: torch.Tensor | None = None,
    *,
    kernels: Kernels = "torch",
) -> torch.Tensor:
    """Decoder input: out[b, n] = latent[b, ids_restore[b, n]] if < K else mask_token; then + pos.

    latent (B, K, C); ids_restore (B, N) int64, non-negative (K or more = masked, values < K distinct
    per row: MAE's argsort(ids_shuffle) or Fus-MAE's per-modality map); mask_token (C,); pos (N, C).
    """
    _check_kernels(kernels)
    if latent.dim() != 3:
        raise ValueError(f"latent must be (B, K, C), got {tuple(latent.shape)}")
    b, k, c = latent.shape
    _check_index("ids_restore", ids_restore, b, 2**62)
    if mask_token.shape != (c,):
        raise ValueError(f"mask_token must be ({c},), got {tuple(mask_token.shape)}")
    if pos is not None and pos.shape != (ids_restore.shape[1], c):
        raise ValueError(f"pos must be ({ids_restore.shape[1]}, {c}), got {tuple(pos.shape)}")
    _check_same_device(latent=latent, ids_restore=ids_restore, mask_token=mask_token, pos=pos)
    if kernels == "torch":
        return scatter_tokens_ref(latent, ids_restore, mask_token, pos)
    _check_triton_device(latent.device)
    return scatter_tokens_triton(latent, ids_restore, mask_token, pos)


def masked_mse(
    pred: torch.Tensor,
    img: torch.Tensor,
    mask: torch.Tensor,
    patch: int,
    norm_pix: bool,
    *,
    kernels: Kernels = "torch",
) -> torch.Tensor:
    """MSE on masked patches only, targets patchified from img (norm_pix: per-patch normalised).

    pred (B, N, P*P*C_in) in patchify order; img (B, C_in, H, W); mask (B, N), 1/True = masked.
    Returns an fp32 scalar: mean over masked patches of the per-patch mean squared error.
    """
    _check_kernels(kernels)
    if img.dim() != 4:
        raise ValueError(f"img must be (B, C_in, H, W), got {tuple(img.shape)}")
    b, c_in, hh, ww = img.shape
    if hh % patch or ww % patch:
        raise ValueError(f"image size {hh}x{ww} is not divisible by the patch size {patch}")
    n = (hh // patch) * (ww // patch)
    if pred.shape != (b, n, patch * patch * c_in):
        raise ValueError(f"pred must be ({b}, {n}, {patch * patch * c_in}), got {tuple(pred.shape)}")
    if mask.shape != (b, n):
        raise ValueError(f"mask must be ({b}, {n}), got {tuple(mask.shape)}")
    _check_same_device(pred=pred, img=img, mask=mask)
    if kernels == "torch":
        return masked_mse_torch(pred, img, mask, patch, norm_pix)
    _check_triton_device(pred.device)
    return masked_mse_triton(pred, img, mask, patch, norm_pix)
