"""The Dataset base of every reader and the packed store, and the helpers readers share while indexing.

A reader produces :class:`~fusmae_fast.data.raw_sample.RawSample` s; the Dataset's ``__getitem__``
turns one into the item dict through :class:`~fusmae_fast.data.transforms.ItemTransform`
(upsampling, fitting to the image size, normalisation). The packed store keeps raw samples, so a
packed dataset and a direct read go through the very same transform and give identical items.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fusmae_fast.data.errors import NoGeoreferenceError
from fusmae_fast.data.labels import BEN19_NAMES, SIMPLIFIED_IGBP_NAMES
from fusmae_fast.data.raw_sample import DatasetInfo, Georeference, RawSample, S2Layout
from fusmae_fast.data.transforms import ItemTransform

BANDS_CHOICES: tuple[str, ...] = ("all", "s1", "s2")
"""The ``bands`` argument of the readers: both modalities, or only S1 or S2."""


def modalities_of(bands: str) -> tuple[str, ...]:
    """A reader's ``bands`` argument -> the modalities its items hold (('s1', 's2'), ('s1',) or ('s2',))."""
    if bands not in BANDS_CHOICES:
        raise ValueError(f"bands must be one of {BANDS_CHOICES}, got {bands!r}")
    return ("s1", "s2") if bands == "all" else (bands,)


def log_skipped(reader: str, count: int, reason: str) -> None:
    """One stderr line saying how many patches ``reader`` left out while indexing, and why."""
    print(f"[fusmae-fast] {reader}: skipped {count} patch(es) with {reason}", file=sys.stderr)


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], desc: str) -> list[Any]:
    """Ordered map over a thread pool (label and metadata reads are I/O bound), with a progress bar
    when long."""
    if len(items) < 512:
        return [fn(x) for x in items]
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(tqdm(pool.map(fn, items, chunksize=64), total=len(items), desc=desc, leave=False))


class RawDataset(Dataset):
    """Base of the readers: ``names``, ``labels`` known up front; images read on ``__getitem__``.

    Subclasses set ``names``, ``labels``, ``layout``, ``info``, ``modalities``, ``split_origin`` and
    implement :meth:`read_raw`. Instances are picklable (DataLoader workers): they hold paths, not open
    files.
    """

    names: list[str]
    labels: np.ndarray
    layout: S2Layout
    info: DatasetInfo
    transform: ItemTransform
    modalities: tuple[str, ...] = ("s1", "s2")
    split_origin: str = ""
    """Where the reader's list of patches comes from (a split file, ``metadata.parquet``, a rule), for
    messages about a patch of that list."""

    @property
    def num_classes(self) -> int:
        """10 simplified IGBP classes (SEN12MS) or the 19 BigEarthNet classes."""
        return len(SIMPLIFIED_IGBP_NAMES) if self.info.kind == "sen12ms" else len(BEN19_NAMES)

    def __len__(self) -> int:
        return len(self.names)

    def read_raw(self, index: int) -> RawSample:
        raise NotImplementedError

    def georeference(self, index: int) -> Georeference:
        """The CRS and bounds of sample ``index`` (its reference GeoTIFF's, or as a store recorded them)."""
        raise NoGeoreferenceError(f"{type(self).__name__}: no georeference for its samples")

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return index % n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        return self.transform(self.read_raw(self._check_index(int(index))), self.layout)
