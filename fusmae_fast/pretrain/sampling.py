"""What each step sees: the resumable sampler's order, the dataset index of each item, its mask seed.

The sampler's order depends only on (run seed, epoch) and each sample's mask seed only on (run seed,
epoch, dataset index), so a resumed run, or W ranks with batch b, see and mask exactly the samples of
one uninterrupted single-process run with batch W x b.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


class IndexedDataset(Dataset):
    """Adds ``index`` (the dataset position) to each item so that masks can be seeded per sample."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        return {"s1": item["s1"], "s2": item["s2"], "index": i}


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch shuffling, sharded over ranks (equal counts, tail dropped), skippable start.

    Rank r of W takes positions r, r + W, ... of the epoch's permutation, so that W ranks x batch b see
    the same samples per step as 1 rank x batch W*b.
    """

    def __init__(self, size: int, *, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True) -> None:
        if size < world:
            raise ValueError(f"dataset of {size} samples is smaller than the world size {world}")
        self.size, self.seed, self.rank, self.world, self.shuffle = size, seed, rank, world, shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and skip its first ``start`` samples of this rank."""
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = (self.size // self.world) * self.world
        return order[self.rank : total : self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return self.size // self.world - self.start


def sample_seeds(run_seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
    """One masking seed per sample from (run seed, epoch, dataset index)."""
    return (run_seed * 1_000_003 + epoch) * 10_000_019 + index.to(torch.int64)
