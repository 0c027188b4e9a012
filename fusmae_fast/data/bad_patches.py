"""Patches that a dataset lists but a store cannot hold as listed, and what ``skip_bad`` does with them.

Faults found while indexing, before any pixel is read:

- **listed twice**: the same patch on two rows of one split (a duplicated CSV row, two parquet
  rows with the same split). With ``skip_bad`` the first row stays and the later ones are left out.
- **in two splits**: the same patch in two splits (train.csv and val.csv, two parquet rows with
  different splits, val_list.txt and test_list.txt). A patch in two splits leaks between them and
  nothing says which one it belongs to: with ``skip_bad`` it is left out of every split.
- **missing file**: a file the patch needs is absent (SEN12MS always finds these while indexing;
  BigEarthNet readers look for them only with ``skip_bad``, otherwise the read names the file).

Without ``skip_bad`` the first such fault stops with a :class:`DatasetError` whose one line names
the file and the patch. With ``skip_bad`` each left-out patch becomes a record ``{"patch", "file",
"reason"}`` in the reader's ``info.skipped_patches``, counted by kind in ``info.skipped``; the
convert writes them (with the split) to the store's ``index.json`` as ``skipped_patches`` and prints
the count. A split list that lists no patch at all, and a file that exists but cannot be read
(corrupt GeoTIFF, NaN pixels, wrong shape), always stop: ``skip_bad`` does not cover them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from fusmae_fast.data.errors import DatasetError
from fusmae_fast.data.raw_dataset import RawDataset
from fusmae_fast.data.raw_sample import RawSample

if TYPE_CHECKING:
    from fusmae_fast.data.raw_sample import Georeference

LISTED_TWICE = "listed_twice"
IN_TWO_SPLITS = "in_two_splits"
MISSING_FILE = "missing_file"
SKIP_HINT = "convert --skip-bad leaves such patches out"


class BadPatches:
    """The bad patches a reader found while indexing: raise on the first, or record each (``skip``)."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.records: list[dict[str, str]] = []
        self.counts: dict[str, int] = {}

    def add(self, kind: str, patch: str, file: str, reason: str) -> None:
        """A bad ``patch`` of ``kind`` (one of the constants above) found in ``file``."""
        if not self.skip:
            raise DatasetError(f"{file}: patch {patch}: {reason} ({SKIP_HINT})")
        self.records.append({"patch": patch, "file": str(file), "reason": reason})
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def merge_into(self, skipped: dict[str, int]) -> dict[str, int]:
        """``skipped`` counts plus this collector's counts (a new dict)."""
        out = dict(skipped)
        for kind, n in self.counts.items():
            out[kind] = out.get(kind, 0) + n
        return out


class ReaderSubset(RawDataset):
    """A reader without some of its patches: rows ``keep`` of ``base``, in order (picklable)."""

    def __init__(self, base: RawDataset, keep: Sequence[int], bad: BadPatches) -> None:
        self.base = base
        self.keep = [int(i) for i in keep]
        self.names = [base.names[i] for i in self.keep]
        self.labels = np.asarray(base.labels)[self.keep]
        self.layout = base.layout
        self.transform = base.transform
        self.modalities = base.modalities
        self.split_origin = base.split_origin
        self.info = replace(
            base.info,
            skipped=bad.merge_into(base.info.skipped),
            skipped_patches=[*base.info.skipped_patches, *bad.records],
        )

    def read_raw(self, index: int) -> RawSample:
        return self.base.read_raw(self.keep[index])

    def georeference(self, index: int) -> Georeference:
        return self.base.georeference(self.keep[index])  # type: ignore[attr-defined]


def check_unique_patches(
    sources: Sequence[tuple[str, RawDataset]], skip_bad: bool
) -> list[tuple[str, RawDataset]]:
    """Every patch once across ``sources`` ((split, reader) pairs about to be packed together).

    A patch twice in one source is *listed twice* (the first stays with ``skip_bad``); a patch in
    two sources of different splits is *in two splits* (left out of all with ``skip_bad``). Returns
    the sources, readers with left-out patches replaced by a :class:`ReaderSubset`.
    """
    first: dict[str, tuple[int, int]] = {}  # patch -> (source, row) of its first occurrence
    drop: list[set[int]] = [set() for _ in sources]
    bads = [BadPatches(skip_bad) for _ in sources]
    leaked: set[str] = set()
    for k, (split, ds) in enumerate(sources):
        for row, name in enumerate(ds.names):
            if name not in first:
                first[name] = (k, row)
                continue
            k0, row0 = first[name]
            split0, ds0 = sources[k0]
            if split0 == split:
                reason = (
                    f"listed twice in split '{split}'"
                    if k0 == k
                    else f"listed twice in split '{split}' (also in {ds0.split_origin})"
                )
                bads[k].add(LISTED_TWICE, name, ds.split_origin, reason)
                drop[k].add(row)
            elif name not in leaked:
                also = f"in two splits: also in split '{split0}' ({ds0.split_origin})"
                bads[k].add(IN_TWO_SPLITS, name, ds.split_origin, also)
                bads[k0].add(IN_TWO_SPLITS, name, ds0.split_origin, f"in two splits: also in split '{split}'")
                drop[k0].add(row0)
                leaked.add(name)
            if name in leaked:
                drop[k].add(row)
    out = []
    for (split, ds), rows, bad in zip(sources, drop, bads, strict=True):
        if rows:
            ds = ReaderSubset(ds, [i for i in range(len(ds)) if i not in rows], bad)
        out.append((split, ds))
    return out
