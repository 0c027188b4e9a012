"""The packed store: a dataset as memory-mappable ``.npy`` arrays plus a JSON index.

Written once by ``fusmae-fast convert`` (:mod:`fusmae_fast.data.packing`), read by
:class:`PackedDataset`. A store folder holds::

    index.json      format/version, kind, sample count, splits, S2 layout, array table (file, dtype,
                    shape, sha256), label vocabulary, per-band statistics, source, skipped counts,
                    bytes per sample, and a checksum over all arrays
    s2_g<k>.npy     (n, bands_k, size_k, size_k) uint16 — S2 raw values per native-resolution group
                    (BigEarthNet: 10 m 4x120x120, 20 m 6x60x60, 60 m 2x20x20; SEN12MS: 12x256x256)
    s1.npy          (n, 2, N, N) float32 or float16 — S1 dB as read
    labels.npy      (n, 19) uint8 multi-hot (BigEarthNet) or (n,) int64 class ids (SEN12MS)
    names.npy       (n,) fixed-width ASCII patch names
    split.npy       (n,) uint8 index into index["split_names"]

Samples keep their raw form, so :class:`PackedDataset` applies the same
:class:`~fusmae_fast.data.transforms.ItemTransform` as the readers: a packed dataset and a direct read
give identical items (exactly for float32 S1; float16 S1 rounds dB to ~0.01). Arrays are opened with
``np.load(mmap_mode="r")`` lazily in each process (never pickled), so DataLoader workers share the
page cache and copy only the sample they read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from fusmae_fast.data.errors import DatasetError, MissingDataError
from fusmae_fast.data.raw_dataset import RawDataset
from fusmae_fast.data.raw_sample import DatasetInfo, RawSample, S2Layout
from fusmae_fast.data.splits import canonical_split
from fusmae_fast.data.transforms import Fit, ItemTransform

STORE_FORMAT = "fusmae-fast-store"
STORE_VERSION = 1
INDEX_NAME = "index.json"
S1_DTYPES: tuple[str, ...] = ("float32", "float16")


def is_store(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder with a store index."""
    index = Path(path) / INDEX_NAME
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("format") == STORE_FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def read_index(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON index of a complete store; errors name the folder."""
    root = Path(path)
    index_path = root / INDEX_NAME
    if not index_path.is_file():
        partial = (
            " (a convert into it did not finish: run it again to resume)"
            if (root / ".convert").is_dir()
            else ""
        )
        raise MissingDataError(f"{root}: not a packed store, {INDEX_NAME} missing{partial}")
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{index_path}: unreadable store index ({e})") from e
    if index.get("format") != STORE_FORMAT:
        raise DatasetError(f"{index_path}: not a {STORE_FORMAT} index")
    if index.get("version") != STORE_VERSION:
        raise DatasetError(
            f"{index_path}: store version {index.get('version')}, this code reads {STORE_VERSION}"
        )
    return index


def chunk_digest(block: np.ndarray) -> str:
    """sha256 of an array block's bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(block).tobytes()).hexdigest()


def array_digest(arr: np.ndarray, chunk_size: int) -> str:
    """sha256 over the per-chunk sha256 digests of ``arr``'s rows (the store's checksum scheme)."""
    h = hashlib.sha256()
    for start in range(0, len(arr), chunk_size):
        h.update(bytes.fromhex(chunk_digest(arr[start : start + chunk_size])))
    return h.hexdigest()


class PackedDataset(RawDataset):
    """One split of a packed store, serving the same items as the reader it was converted from.

    Args:
        root: the store folder.
        split: 'train' | 'validation' ('val') | 'test' | 'all' (every sample of the store).
        image_size: output side (default: the native size, 120 for both kinds after fitting).
        normalize: docs/design.md §5 normalisation; False returns raw values.
        fit: 'resize' or 'crop' (default: 'resize' for BigEarthNet, 'crop' for SEN12MS).
        verify: recompute every array's sha256 against the index first (reads the whole store).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        image_size: int = 120,
        normalize: bool = True,
        fit: Fit | None = None,
        verify: bool = False,
    ) -> None:
        self.root = Path(root)
        self.index = read_index(self.root)
        self.split = canonical_split(split)
        self.layout = S2Layout.from_json(self.index["layout"])
        kind = self.index["kind"]
        self.transform = ItemTransform(
            image_size=image_size,
            normalize=normalize,
            fit=fit if fit is not None else ("crop" if kind == "sen12ms" else "resize"),
        )
        self.info = DatasetInfo(kind=kind, source=self.index["source"], skipped=self.index.get("skipped", {}))
        self.modalities = ("s1", "s2")
        for name, spec in self.index["arrays"].items():
            if not (self.root / spec["file"]).is_file():
                raise MissingDataError(f"{self.root / spec['file']}: store array {name!r} missing")
        if verify:
            self.verify()
        split_names = list(self.index["split_names"])
        codes = np.load(self.root / self.index["arrays"]["split"]["file"], mmap_mode="r")
        if self.split == "all":
            self.indices = np.arange(len(codes), dtype=np.int64)
        else:
            if self.split not in split_names:
                raise ValueError(f"{self.root}: the store holds split(s) {split_names}, not {self.split!r}")
            self.indices = np.flatnonzero(np.asarray(codes) == split_names.index(self.split)).astype(np.int64)
        labels = np.load(self.root / self.index["arrays"]["labels"]["file"], mmap_mode="r")
        picked = np.asarray(labels[self.indices])
        self.labels = picked.astype(np.int64) if kind == "sen12ms" else picked.astype(np.float32)
        self._arrays: dict[str, np.ndarray] | None = None
        self._names: list[str] | None = None

    # Arrays are mapped on first use in each process and never pickled.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        state["_names"] = None
        return state

    def _mapped(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {
                name: np.load(self.root / spec["file"], mmap_mode="r")
                for name, spec in self.index["arrays"].items()
            }
        return self._arrays

    @property
    def names(self) -> list[str]:  # type: ignore[override]
        if self._names is None:
            raw = self._mapped()["names"]
            self._names = [raw[j].decode("ascii") for j in self.indices]
        return self._names

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def bytes_per_sample(self) -> float:
        return float(self.index["bytes_per_sample"])

    def read_raw(self, index: int) -> RawSample:
        j = int(self.indices[index])
        arrays = self._mapped()
        groups = tuple(arrays[f"s2_g{g}"][j] for g in range(len(self.layout.groups)))
        return RawSample(
            s1=arrays["s1"][j], s2=groups, label=self.labels[index], name=arrays["names"][j].decode("ascii")
        )

    def verify(self) -> None:
        """Recompute each array file's content hash and compare with the index (DatasetError if not)."""
        for spec in self.index["arrays"].values():
            arr = np.load(self.root / spec["file"], mmap_mode="r")
            if list(arr.shape) != list(spec["shape"]) or arr.dtype.str != np.dtype(spec["dtype"]).str:
                raise DatasetError(f"{self.root / spec['file']}: shape/dtype differ from the index")
            if array_digest(arr, int(self.index["chunk_size"])) != spec["sha256"]:
                raise DatasetError(f"{self.root / spec['file']}: checksum mismatch (store corrupted)")
