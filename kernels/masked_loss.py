"""MAE's reconstruction loss on masked patches only, targets read straight from the image.

masked_mse
    pred (B, N, P*P*C_in) in MAE's patchify order (per patch: rows p, columns q, then channel c,
    ``nchpwq -> nhwpqc``); img (B, C_in, H, W); mask (B, N) float or bool, 1/True = masked.
    target = patchify(img); with norm_pix, each target patch is normalised to zero mean and unit
    variance (unbiased variance, eps 1e-6, as MAE). loss = sum over masked patches of the mean over
    the patch vector of (pred - target)^2, divided by the number of masked patches (0 if none).
    Computed and returned in fp32 whatever the input dtype (fp64 for an fp64 reference).
"""

from __future__ import annotations

import torch


def patchify(img: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, P*P*C) in MAE's order (nchpwq -> nhwpqc)."""
    b, c, hh, ww = img.shape
    h, w = hh // patch, ww // patch
    x = img.reshape(b, c, h, patch, w, patch)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, h * w, patch * patch * c)


def unpatchify(x: torch.Tensor, patch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """(B, N, P*P*C) -> (B, C, H, W); the inverse of :func:`patchify`."""
    b = x.shape[0]
    h, w = height // patch, width // patch
    x = x.reshape(b, h, w, patch, patch, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, channels, height, width)


def masked_mse_ref(
    pred: torch.Tensor, img: torch.Tensor, mask: torch.Tensor, patch: int, norm_pix: bool
) -> torch.Tensor:
    """Pure-torch reference of masked_mse (fp32 scalar)."""
    acc = torch.promote_types(pred.dtype, torch.float32)
    target = patchify(img.to(acc), patch)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((pred.to(acc) - target) ** 2).mean(dim=-1)
    m = mask.to(acc)
    denom = m.sum()
    return (per_patch * m).sum() / denom.clamp(min=1.0)
