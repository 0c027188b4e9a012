"""Decoder input in one pass: scatter kept latents to their positions, mask tokens elsewhere, + pos.

scatter_tokens
    latent (B, K, C): the kept tokens; ids_restore (B, N) int64: for each position n, the row of
    ``latent`` it takes if ``ids_restore[b, n] < K``, else the ``mask_token`` (C,). MAE's convention
    (ids_restore = argsort(ids_shuffle)) satisfies this; so does the per-modality map of Fus-MAE's
    ragged layout, where every masked position holds K. Values < K are distinct within a row.
    out[b, n] = latent[b, ids_restore[b, n]] or mask_token, then + pos[n] (pos (N, C), optional).
    Exact in every dtype (a copy, plus one add when pos is given).
"""

from __future__ import annotations

import torch


def scatter_tokens_ref(
    latent: torch.Tensor,
    ids_restore: torch.Tensor,
    mask_token: torch.Tensor,
    pos: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pure-torch reference of scatter_tokens; differentiable in latent, mask_token and pos."""
    b, k, c = latent.shape
    n = ids_restore.shape[1]
    is_kept = (ids_restore < k)[..., None]
    if k == 0:
        out = mask_token.to(latent.dtype).expand(b, n, c)
    else:
        src = torch.gather(latent, 1, ids_restore.clamp(max=k - 1)[..., None].expand(b, n, c))
        out = torch.where(is_kept, src, mask_token.to(latent.dtype))
    if pos is not None:
        out = out + pos
    return out
