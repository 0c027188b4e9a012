"""``open_dataset``: one entry point for the built-in samples, packed stores and raw dataset roots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from fusmae_fast.data.errors import DatasetError, MissingDataError
from fusmae_fast.data.splits import canonical_split

_SAMPLE_KEYS = ("n_train", "n_val", "n_test", "seed", "cache", "workers")


def open_dataset(
    path: str | os.PathLike[str] | None, split: str = "train", *, image_size: int = 120, **kw: Any
) -> Dataset:
    """The dataset at ``path``, for ``split`` ('train' | 'validation' (or 'val') | 'test' | 'all').

    ``path``:

    - None or ``"sample"``: the built-in BigEarthNet-style sample (generated once, cached; keyword
      arguments ``n_train``, ``n_val``, ``n_test``, ``seed``, ``cache`` pick another size/seed/place);
      ``"sample:sen12ms"``: the built-in SEN12MS-style sample.
    - a packed store folder (its ``index.json``): :class:`~fusmae_fast.data.store.PackedDataset`.
    - a BigEarthNet v1.0 root (holding ``BigEarthNet-v1.0`` and ``BigEarthNet-S1-v1.0``):
      :class:`~fusmae_fast.data.bigearthnet.BigEarthNetV1` with the split file that
      :func:`~fusmae_fast.data.bigearthnet.find_v1_split_file` finds in the root (or ``split_file=``)
      and the snow/cloud lists found in the root as exclusions (or ``exclude_files=``). Folders kept
      elsewhere: pass ``s2_root=`` / ``s1_root=``, ``path`` being the folder with the split files.
    - a BigEarthNet v2.0 root (``metadata.parquet``): :class:`~fusmae_fast.data.bigearthnet.BigEarthNetV2`.
    - a SEN12MS root (``ROIs*_<season>/s2_<n>`` folders): :class:`~fusmae_fast.data.sen12ms.SEN12MS`
      (splits: see that module).

    Other keyword arguments go to the dataset class (e.g. ``normalize``, ``nan_policy``, ``fit``).
    Items: ``s1`` (2,S,S) and ``s2`` (12,S,S) float32, ``label``, ``name``; attributes ``labels``,
    ``names``, ``num_classes``.
    """
    from fusmae_fast.data.store import PackedDataset, is_store

    split = canonical_split(split)
    if path is None or str(path) == "sample" or str(path).startswith("sample:"):
        kind = _sample_kind(path)
        from fusmae_fast.data.builtin import builtin_sample

        sample_kw = {k: kw.pop(k) for k in _SAMPLE_KEYS if k in kw}
        return PackedDataset(builtin_sample(kind, **sample_kw), split, image_size=image_size, **kw)
    if "s2_root" in kw or "s1_root" in kw:
        return _open_v1(Path(path), split, image_size, kw)
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingDataError(
            f"{p}: no such file or folder "
            "(expected a packed store, a BigEarthNet v1/v2 root or a SEN12MS root)"
        )
    if is_store(p):
        return PackedDataset(p, split, image_size=image_size, **kw)
    if (p / ".convert").is_dir():
        raise DatasetError(
            f"{p}: an unfinished convert (no index.json); run the same convert again to finish it"
        )
    from fusmae_fast.data.bigearthnet import V1_S2_DIR, V2_METADATA

    if p.name == V1_S2_DIR:
        p = p.parent
    if (p / V1_S2_DIR).is_dir():
        return _open_v1(p, split, image_size, kw)
    if (p / V2_METADATA).is_file():
        from fusmae_fast.data.bigearthnet import BigEarthNetV2

        return BigEarthNetV2(p, split, image_size=image_size, **kw)
    from fusmae_fast.data.sen12ms import SEN12MS, is_sen12ms_root

    if p.is_dir() and is_sen12ms_root(p):
        return SEN12MS(p, split=split, image_size=image_size, **kw)
    raise DatasetError(
        f"{p}: not a dataset this project reads. Looked for: index.json (packed store); BigEarthNet-v1.0 and "
        "BigEarthNet-S1-v1.0 folders (BigEarthNet v1); metadata.parquet (BigEarthNet v2 / reBEN); "
        "ROIs<n>_<season>/s2_<n> folders (SEN12MS)"
    )


def _sample_kind(path: str | os.PathLike[str] | None) -> str:
    name = "sample" if path is None else str(path)
    kinds = {"sample": "bigearthnet", "sample:bigearthnet": "bigearthnet", "sample:sen12ms": "sen12ms"}
    if name not in kinds:
        raise ValueError(
            f"unknown built-in sample {name!r}; use None, 'sample', 'sample:bigearthnet' or 'sample:sen12ms'"
        )
    return kinds[name]


def _open_v1(root: Path, split: str, image_size: int, kw: dict[str, Any]) -> Dataset:
    from fusmae_fast.data.bigearthnet import (
        V1_S1_DIR,
        V1_S2_DIR,
        BigEarthNetV1,
        default_v1_exclusions,
        find_v1_split_file,
    )

    s2_root = kw.pop("s2_root", root / V1_S2_DIR)
    s1_root = kw.pop("s1_root", root / V1_S1_DIR)
    if "split_file" not in kw and split != "all":
        found = find_v1_split_file(root, split)
        if found is None:
            raise MissingDataError(
                f"{root}: no split file for {split!r} (looked for train/val/test.csv, validation.csv and "
                "bigearthnet-<split>.txt in it and in its splits/ folder); "
                "pass split_file=..., or split='all'"
            )
        kw["split_file"] = found
    if "exclude_files" not in kw:
        kw["exclude_files"] = default_v1_exclusions(root)
    return BigEarthNetV1(s2_root, s1_root, image_size=image_size, **kw)
