"""A tiny in-memory S1/S2 dataset for pretraining tests (picklable, for DataLoader workers and spawn)."""

import torch
from torch.utils.data import Dataset


class RandomPairs(Dataset):
    """Item i: seeded Gaussian images (2,H,W) and (12,H,W); ``poison`` items hold huge values."""

    def __init__(self, n: int, size: int = 120, poison: tuple[int, ...] = ()) -> None:
        self.n, self.size, self.poison = n, size, set(poison)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(1000 + i)
        s1 = torch.randn(2, self.size, self.size, generator=g)
        s2 = torch.randn(12, self.size, self.size, generator=g)
        if i in self.poison:
            s2 = s2 * 1e30  # finite, but overflows inside the network
        return {"s1": s1, "s2": s2}
