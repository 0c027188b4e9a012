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


class LabelledPairs(Dataset):
    """Images whose content depends on a multi-hot (19) or single (10-class) label.

    Each class c adds a fixed random pattern to S2 (and a weaker one to S1), so labels are learnable.
    """

    def __init__(self, n: int, classes: int = 19, single_label: bool = False, size: int = 120, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.n, self.classes, self.single, self.size = n, classes, single_label, size
        self.patterns2 = torch.randn(classes, 12, size, size, generator=torch.Generator().manual_seed(99))
        self.patterns1 = torch.randn(classes, 2, size, size, generator=torch.Generator().manual_seed(98))
        if single_label:
            self.labels = torch.randint(0, classes, (n,), generator=g)
        else:
            self.labels = (torch.rand(n, classes, generator=g) < 0.25).float()
            self.labels[torch.arange(n), torch.randint(0, classes, (n,), generator=g)] = 1.0
        self.names = [f"sample_{i:04d}" for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(5000 + i)
        y = self.labels[i]
        w = torch.nn.functional.one_hot(y, self.classes).float() if self.single else y
        s2 = 0.5 * torch.randn(12, self.size, self.size, generator=g) + torch.einsum(
            "c,cxhw->xhw", w, self.patterns2
        )
        s1 = torch.randn(2, self.size, self.size, generator=g) + 0.5 * torch.einsum(
            "c,cxhw->xhw", w, self.patterns1
        )
        return {"s1": s1, "s2": s2, "label": y}
