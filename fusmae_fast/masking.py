"""Fus-MAE masking (paper §3.3, docs/design.md §2): which tokens the encoder sees, in the modality-sorted
layout.

Index spaces
    Each modality has N patches in raster order. The combined index space has 2N entries: S1 patch n is
    index n, S2 patch n is index N + n.
Layout
    The encoder sees K tokens per sample (K is the same for every sample): first the kept S1 tokens, then
    the kept S2 tokens, each in raster order. ``split[b]`` is the number of kept S1 tokens of sample b,
    so tokens ``[0, split[b])`` are S1 and ``[split[b], K)`` are S2. This is the layout every kernel
    works in (docs/design.md §2): no padding, no per-modality tensors.
Strategies
    consistent: N' = int(N (1 - r)) raster positions drawn at random are kept in both modalities;
        K = 2N', split = N' for every sample.
    independent: K = int(2N (1 - r)) tokens drawn uniformly at random over all 2N tokens; split varies
        per sample and can take every value from max(0, K - N) to min(K, N) (0..K when K <= N).
Randomness comes from a ``torch.Generator`` on the CPU (identical masks on every device for a seed),
or from one seed per sample (``seeds``): then a sample's mask depends only on its own seed, not on
which batch or rank it lands in (pretraining derives it from the run seed, the epoch and the sample's
dataset index, so resumed and multi-process runs mask every sample exactly as a single run would).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STRATEGIES = ("independent", "consistent", "none")


@dataclass
class Masking:
    """The outcome of masking a batch; every tensor is on the requested device."""

    ids_keep: torch.Tensor
    """(B, K) int64 combined indices of the kept tokens, ascending (hence modality-sorted)."""
    ids_restore: torch.Tensor
    """(B, 2N) int64 MAE's argsort(ids_shuffle): position of each combined index in [kept, masked]."""
    mask: torch.Tensor
    """(B, 2N) bool, True = masked."""
    split: torch.Tensor
    """(B,) int64, number of kept S1 tokens; tokens [0, split) of the sequence are S1."""
    num_patches: int
    """N, patches per modality."""

    @property
    def num_kept(self) -> int:
        return self.ids_keep.shape[1]

    @property
    def mask_s1(self) -> torch.Tensor:
        """(B, N) bool, True where the S1 patch is masked."""
        return self.mask[:, : self.num_patches]

    @property
    def mask_s2(self) -> torch.Tensor:
        """(B, N) bool, True where the S2 patch is masked."""
        return self.mask[:, self.num_patches :]

    @property
    def ids_restore_s1(self) -> torch.Tensor:
        """(B, N): the sequence row of each S1 patch, or >= K when masked (scatter_tokens convention)."""
        return self.ids_restore[:, : self.num_patches]

    @property
    def ids_restore_s2(self) -> torch.Tensor:
        """(B, N): the sequence row of each S2 patch, or >= K when masked."""
        return self.ids_restore[:, self.num_patches :]

    def masked_rows(self, modality: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the masked patches of one modality are, for computing rows of masked patches only.

        ``count`` must be the number of masked patches of that modality in every sample (true for
        consistent masking: N - K/2). Returns ``ids_masked`` (B, count), the raster indices of the
        masked patches, ascending, and ``ids_back`` (B, N): for each patch its row in ``ids_masked``,
        or ``count`` when visible (the ``scatter_tokens`` convention, so that rows computed for the
        masked patches go back to their places with zeros elsewhere).
        """
        mask = self.mask_s1 if modality == 1 else self.mask_s2 if modality == 2 else None
        if mask is None:
            raise ValueError(f"modality must be 1 or 2, got {modality}")
        ids_masked = _masked_positions(mask, count)
        rank = torch.cumsum(mask.to(torch.int64), dim=1) - 1
        ids_back = torch.where(mask, rank, torch.full_like(rank, count))
        return ids_masked, ids_back

    def ids_keep_modality(self, modality: int) -> torch.Tensor:
        """(B, K) raster patch indices of modality 1 (S1) or 2 (S2) at their sequence rows, -1 elsewhere.

        This is the ragged-keep form ``masked_patch_embed`` takes: embedding S1 with ``ids_keep_modality(1)``
        and S2 with ``ids_keep_modality(2)`` and adding the two gives the modality-sorted token sequence.
        """
        rows = torch.arange(self.num_kept, device=self.ids_keep.device)[None, :]
        in_s1 = rows < self.split[:, None]
        if modality == 1:
            return torch.where(in_s1, self.ids_keep, torch.full_like(self.ids_keep, -1))
        if modality == 2:
            return torch.where(in_s1, torch.full_like(self.ids_keep, -1), self.ids_keep - self.num_patches)
        raise ValueError(f"modality must be 1 or 2, got {modality}")


def _masked_positions(mask: torch.Tensor, count: int) -> torch.Tensor:
    """(B, count) positions of the True entries of each row of ``mask``, ascending; every row must hold
    ``count`` of them. A stable sort rather than ``nonzero``: no data-dependent shape (torch.compile)."""
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :count]


def _finish(ids_keep: torch.Tensor, num_patches: int, device: torch.device | str) -> Masking:
    b, k = ids_keep.shape
    total = 2 * num_patches
    mask = torch.ones(b, total, dtype=torch.bool)
    mask.scatter_(1, ids_keep, False)
    # ids_shuffle = kept (ascending) then masked (ascending); argsort of it is MAE's ids_restore.
    masked = _masked_positions(mask, total - k)
    ids_shuffle = torch.cat([ids_keep, masked], dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    split = (ids_keep < num_patches).sum(dim=1)
    return Masking(
        ids_keep=ids_keep.to(device),
        ids_restore=ids_restore.to(device),
        mask=mask.to(device),
        split=split.to(device),
        num_patches=num_patches,
    )


def _noise(
    batch: int, width: int, generator: torch.Generator | None, seeds: torch.Tensor | None
) -> torch.Tensor:
    if seeds is None:
        return torch.rand(batch, width, generator=generator)
    if seeds.shape != (batch,):
        raise ValueError(f"seeds must have shape ({batch},), got {tuple(seeds.shape)}")
    rows = [torch.rand(width, generator=torch.Generator().manual_seed(int(s))) for s in seeds.tolist()]
    return torch.stack(rows)


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    strategy: str,
    *,
    generator: torch.Generator | None = None,
    seeds: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> Masking:
    """Draw a mask for ``batch`` samples of two modalities with ``num_patches`` patches each.

    strategy: 'consistent', 'independent', or 'none' (keep everything: split = N, for inference).
    Randomness: ``seeds`` (B,) int64, one per sample, if given; else ``generator``; else torch's global RNG.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"masking strategy must be one of {STRATEGIES}, got {strategy!r}")
    if batch < 1 or num_patches < 1:
        raise ValueError(f"batch and num_patches must be positive, got {batch}, {num_patches}")
    n = num_patches
    if strategy == "none":
        ids_keep = torch.arange(2 * n).expand(batch, 2 * n).clone()
        return _finish(ids_keep, n, device)
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1), got {mask_ratio}")
    if strategy == "consistent":
        keep_per = int(n * (1.0 - mask_ratio))
        if keep_per < 1:
            raise ValueError(f"mask_ratio {mask_ratio} keeps no patch of {n}")
        noise = _noise(batch, n, generator, seeds)
        pos = torch.sort(torch.argsort(noise, dim=1)[:, :keep_per], dim=1).values
        ids_keep = torch.cat([pos, pos + n], dim=1)
    else:
        k = int(2 * n * (1.0 - mask_ratio))
        if k < 1:
            raise ValueError(f"mask_ratio {mask_ratio} keeps no token of {2 * n}")
        noise = _noise(batch, 2 * n, generator, seeds)
        ids_keep = torch.sort(torch.argsort(noise, dim=1)[:, :k], dim=1).values
    return _finish(ids_keep, n, device)


def single_modality(
    batch: int, num_patches: int, modality: int, device: torch.device | str = "cpu"
) -> Masking:
    """All patches of one modality and none of the other (missing-modality inference).

    modality 1: split = N (only S1 tokens); modality 2: split = 0 (only S2 tokens). The cross-modal
    attention then has no key for any query and contributes exactly 0.
    """
    n = num_patches
    if modality not in (1, 2):
        raise ValueError(f"modality must be 1 or 2, got {modality}")
    start = 0 if modality == 1 else n
    ids_keep = torch.arange(start, start + n).expand(batch, n).clone()
    return _finish(ids_keep, n, device)
