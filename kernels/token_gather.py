"""Masked patch embedding and token gather: compute only the tokens MAE keeps.

masked_patch_embed
    img (B, C_in, H, W); weight (C, C_in, P, P) (Conv2d layout, Eq. 1); bias (C,); pos (N, C) with
    N = (H/P)(W/P) patches in raster order; ids_keep (B, K) int64 raster patch indices.
    out[b, j] = W . patch(img[b], ids_keep[b, j]) + bias + pos[ids_keep[b, j]].
    Ragged keeps (independent masking): an index of -1 marks an empty slot; its output row is 0 and
    it receives/propagates no gradient. Masked patches are never projected.
gather_tokens
    x (B, N, C); ids_keep (B, K) in [0, N); out[b, j] = x[b, ids_keep[b, j]] (+ pos[ids_keep[b, j]]).
    Exact (a copy, plus one add when pos is given).
"""

from __future__ import annotations

import torch


def patches_of(img: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C_in, H, W) -> (B, N, C_in*P*P), per patch in Conv2d weight order (c, p, q), raster patches."""
    b, c, hh, ww = img.shape
    h, w = hh // patch, ww // patch
    x = img.reshape(b, c, h, patch, w, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, h * w, c * patch * patch)


def masked_patch_embed_ref(
    img: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pos: torch.Tensor,
    ids_keep: torch.Tensor,
    patch: int,
) -> torch.Tensor:
    """Pure-torch reference: projects only the kept patches (rows with id -1 are zero)."""
    b, k = ids_keep.shape
    dim = weight.shape[0]
    flat_w = weight.reshape(dim, -1)
    patches = patches_of(img, patch)  # a view/copy of the image, no FLOPs
    valid = ids_keep >= 0
    safe = ids_keep.clamp(min=0)
    kept = torch.gather(patches, 1, safe[..., None].expand(b, k, patches.shape[-1]))
    if bool(valid.all()):
        return torch.nn.functional.linear(kept, flat_w, bias) + pos[safe]
    out = kept.new_zeros(b, k, dim)
    rows = torch.nn.functional.linear(kept[valid], flat_w, bias) + pos[safe[valid]]
    return out.index_put((valid,), rows)


def gather_tokens_ref(
    x: torch.Tensor, ids_keep: torch.Tensor, pos: torch.Tensor | None = None
) -> torch.Tensor:
    """Pure-torch reference of gather_tokens."""
    b, k = ids_keep.shape
    out = torch.gather(x, 1, ids_keep[..., None].expand(b, k, x.shape[-1]))
    if pos is not None:
        out = out + pos[ids_keep]
    return out
