"""The patch layout of the model (docs/design.md §2): MAE's ``patchify`` / ``unpatchify`` and the fixed
2-D sine-cosine position embedding.

A (B, C, H, W) image is cut into N = (H/P) x (W/P) patches in raster order; a patch vector holds its
P x P x C values with rows p first, then columns q, then channel c (MAE's ``nchpwq -> nhwpqc``). The
predictions of the decoders and the targets of the loss are in this order.
"""

from __future__ import annotations

import torch


def patch_view(img: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/P, W/P, P, P, C) in MAE's patchify order, without a copy when img's layout
    allows (reshaping it to (B, N, P*P*C) is :func:`patchify`)."""
    b, c, hh, ww = img.shape
    return img.reshape(b, c, hh // patch, patch, ww // patch, patch).permute(0, 2, 4, 3, 5, 1)


def patchify(img: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, P*P*C) in MAE's order (nchpwq -> nhwpqc)."""
    b, h, w = img.shape[0], img.shape[2] // patch, img.shape[3] // patch
    return patch_view(img, patch).reshape(b, h * w, -1)


def unpatchify(x: torch.Tensor, patch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """(B, N, P*P*C) -> (B, C, H, W); the inverse of :func:`patchify`."""
    b = x.shape[0]
    h, w = height // patch, width // patch
    x = x.reshape(b, h, w, patch, patch, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, channels, height, width)


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine position embedding: (grid*grid, dim), raster order."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    coords = torch.arange(grid, dtype=torch.float64)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")  # MAE: first half from w (x), second from h

    def embed(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None, :]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([embed(gx), embed(gy)], dim=1).float()


__all__ = ["patch_view", "patchify", "sincos_pos_embed_2d", "unpatchify"]
