"""BigEarthNet-MM readers: v1.0 folders (``BigEarthNetV1``) and v2.0 / reBEN (``BigEarthNetV2``).

v1.0 layout (docs/design.md §5)::

    BigEarthNet-v1.0/<S2 name>/<S2 name>_B01.tif .. _B12.tif, _B8A.tif, <S2 name>_labels_metadata.json
    BigEarthNet-S1-v1.0/<S1 name>/<S1 name>_VV.tif, _VH.tif, <S1 name>_labels_metadata.json

S2 names look like ``S2A_MSIL2A_20170613T101031_87_48`` and the hour may have one digit
(``..T93020_69_24``): names are never parsed, only used as folder/file stems. S1 JSONs carry
``corresponding_s2_patch``. Pairing S1 <-> S2 uses the split CSV (``S2name,S1name`` per line) when
given, else the S1 JSONs. Labels come from the S2 JSON (CORINE-43 names, mapped to the 19 classes
of docs/design.md §5); patches whose names all map to nothing are skipped and counted in
``info.skipped``.

v2.0 (reBEN) layout::

    BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_B01.tif ..   (tile = patch_id without its _x_y)
    BigEarthNet-S1/<product>/<s1_name>/<s1_name>_VV.tif, _VH.tif   (product = s1_name without _tile_x_y)
    metadata.parquet: patch_id, labels, split, s1_name, contains_seasonal_snow, contains_cloud_or_shadow

Splits: v1 from split files (see :func:`find_v1_split_file`), v2 from the parquet ``split`` column.
Both exclude snow/cloud patches when told (v1: exclusion lists by file; v2: the parquet flags, on by
default).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fusmae_fast.data.bands import BEN_IMAGE_SIZE, BEN_S2_GROUPS, S1_BANDS
from fusmae_fast.data.errors import DatasetError, MissingDataError
from fusmae_fast.data.geotiff import NanPolicy, check_nan_policy, gdal_env, read_geotiff
from fusmae_fast.data.labels import ben19_multi_hot
from fusmae_fast.data.raw_dataset import RawDataset, log_skipped, modalities_of, parallel_map
from fusmae_fast.data.raw_sample import BEN_LAYOUT, DatasetInfo, RawSample
from fusmae_fast.data.splits import canonical_split, read_name_list, read_rows
from fusmae_fast.data.transforms import Fit, ItemTransform

V1_S2_DIR = "BigEarthNet-v1.0"
V1_S1_DIR = "BigEarthNet-S1-v1.0"
V2_S2_DIR = "BigEarthNet-S2"
V2_S1_DIR = "BigEarthNet-S1"
V2_METADATA = "metadata.parquet"
SNOW_LIST = "patches_with_seasonal_snow.csv"
CLOUD_LIST = "patches_with_cloud_and_shadow.csv"
V2_COLUMNS = ("patch_id", "labels", "split", "s1_name")


def read_json(path: Path) -> dict[str, Any]:
    """A metadata JSON as a dict; missing / invalid JSON raise errors naming the file."""
    if not path.is_file():
        raise MissingDataError(f"{path}: missing file")
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable JSON ({e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def json_labels(path: Path) -> list[str]:
    """The ``labels`` list of a BigEarthNet metadata JSON (error naming the file if absent)."""
    obj = read_json(path)
    labels = obj.get("labels")
    if not isinstance(labels, list):
        raise DatasetError(f"{path}: no 'labels' list in the metadata JSON")
    return labels


def _read_bands(
    folder: Path, stem: str, bands: tuple[str, ...] | list[str], size: int, dtype: type, nan_policy: NanPolicy
) -> np.ndarray:
    """(bands, size, size) of ``dtype``: one single-band GeoTIFF ``<stem>_<band>.tif`` per band."""
    return np.stack(
        [
            read_geotiff(
                folder / f"{stem}_{b}.tif", count=1, shape=(size, size), dtype=dtype, nan_policy=nan_policy
            )[0]
            for b in bands
        ]
    )


def read_ben_s2(folder: Path, stem: str, nan_policy: NanPolicy) -> tuple[np.ndarray, ...]:
    """The S2 band groups of one patch folder: uint16 (bands, n, n) per native resolution."""
    return tuple(
        _read_bands(folder, stem, names, size, np.uint16, nan_policy) for names, size in BEN_S2_GROUPS
    )


def read_ben_s1(folder: Path, stem: str, nan_policy: NanPolicy) -> np.ndarray:
    """(2, 120, 120) float32 dB [VV, VH] of one S1 patch folder."""
    return _read_bands(folder, stem, S1_BANDS, BEN_IMAGE_SIZE, np.float32, nan_policy)


def read_split_pairs(path: str | os.PathLike[str]) -> list[tuple[str, str | None]]:
    """A split file: ``S2name,S1name`` lines (BigEarthNet-MM CSV) or one ``S2name`` a line.

    A first line that is not a patch name (a header) is skipped.
    """
    out: list[tuple[str, str | None]] = []
    for i, row in enumerate(read_rows(path)):
        if not row[0].startswith("S2"):
            if i == 0:
                continue
            raise DatasetError(f"{path}: line {i + 1}: {row[0]!r} is not an S2 patch name")
        s1 = row[1] if len(row) > 1 and row[1] else None
        if s1 is not None and not s1.startswith("S1"):
            raise DatasetError(f"{path}: line {i + 1}: {s1!r} is not an S1 patch name")
        out.append((row[0], s1))
    return out


def find_v1_split_file(root: str | os.PathLike[str], split: str) -> Path | None:
    """The split file for ``split`` under a v1 root, trying in order, in ``root`` and ``root/splits``:
    ``{train,val,test}.csv`` (BigEarthNet-MM, ``S2,S1`` per line), ``validation.csv``,
    ``bigearthnet-{train,val,test}.txt`` (Neumann et al. lists, one S2 name a line)."""
    split = canonical_split(split)
    short = {"train": "train", "validation": "val", "test": "test"}[split]
    names = [f"{short}.csv", f"{split}.csv", f"bigearthnet-{short}.txt", f"bigearthnet-{short}.csv"]
    for folder in (Path(root), Path(root) / "splits"):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def default_v1_exclusions(root: str | os.PathLike[str]) -> list[Path]:
    """The snow and cloud lists distributed beside BigEarthNet v1 when present in ``root``."""
    return [Path(root) / n for n in (SNOW_LIST, CLOUD_LIST) if (Path(root) / n).is_file()]


class BigEarthNetV1(RawDataset):
    """BigEarthNet-MM v1.0 from its folders.

    Args:
        s2_root: the ``BigEarthNet-v1.0`` folder.
        s1_root: the ``BigEarthNet-S1-v1.0`` folder (not needed when ``bands="s2"``).
        split_file: a split file (see :func:`read_split_pairs`); None = every S2 patch that has an S1
            pair (pairing through the S1 JSONs' ``corresponding_s2_patch``).
        normalize: docs/design.md §5 normalisation; False returns raw values (10 m bands as stored,
            coarser bands bilinearly upsampled to 120x120).
        bands: 'all' (S1 and S2), 's2' or 's1' (the item then holds only that modality).
        image_size, fit: see :class:`ItemTransform`.
        nan_policy: 'error' or 'zero' for NaN/Inf pixels.
        exclude_files: lists of S2 names to leave out (e.g. the snow and cloud/shadow lists).
    """

    def __init__(
        self,
        s2_root: str | os.PathLike[str] | None,
        s1_root: str | os.PathLike[str] | None = None,
        split_file: str | os.PathLike[str] | None = None,
        normalize: bool = True,
        bands: str = "all",
        *,
        image_size: int = BEN_IMAGE_SIZE,
        fit: Fit = "resize",
        nan_policy: NanPolicy = "error",
        exclude_files: Iterable[str | os.PathLike[str]] = (),
    ) -> None:
        check_nan_policy(nan_policy)
        self.modalities = modalities_of(bands)
        self.s2_root = Path(s2_root) if s2_root is not None else None
        self.s1_root = Path(s1_root) if s1_root is not None else None
        for mod, root, label in (("s2", self.s2_root, "s2_root"), ("s1", self.s1_root, "s1_root")):
            if mod in self.modalities and root is None:
                raise ValueError(f"BigEarthNetV1 with bands={bands!r} needs {label}")
            if root is not None and not root.is_dir():
                raise MissingDataError(f"{root}: {label} folder not found")
        self.nan_policy = nan_policy
        self.transform = ItemTransform(image_size=image_size, normalize=normalize, fit=fit)
        self.layout = BEN_LAYOUT
        skipped: dict[str, int] = {}

        need_s1 = "s1" in self.modalities
        if split_file is not None:
            pairs = read_split_pairs(split_file)
            if need_s1 and any(s1 is None for _, s1 in pairs):
                by_s2 = self._s1_pairs_from_json()
                missing = [s2 for s2, s1 in pairs if s1 is None and s2 not in by_s2]
                if missing:
                    raise DatasetError(
                        f"{split_file}: {len(missing)} S2 patch(es) have no S1 patch in {self.s1_root} "
                        f"(first: {missing[0]})"
                    )
                pairs = [(s2, s1 if s1 is not None else by_s2[s2]) for s2, s1 in pairs]
        elif need_s1:
            by_s2 = self._s1_pairs_from_json()
            if self.s2_root is not None:
                s2_names = sorted(p.name for p in self.s2_root.iterdir() if p.is_dir())
                unpaired = [n for n in s2_names if n not in by_s2]
                if unpaired:
                    skipped["no_s1_pair"] = len(unpaired)
                pairs = [(n, by_s2[n]) for n in s2_names if n in by_s2]
            else:
                pairs = sorted(by_s2.items())
        else:
            assert self.s2_root is not None
            pairs = [(p.name, None) for p in sorted(self.s2_root.iterdir()) if p.is_dir()]

        excluded: set[str] = set()
        for f in exclude_files:
            excluded.update(read_name_list(f, prefix="S2"))
        if excluded:
            before = len(pairs)
            pairs = [p for p in pairs if p[0] not in excluded]
            if before - len(pairs):
                skipped["excluded"] = before - len(pairs)

        def label_of(pair: tuple[str, str | None]) -> np.ndarray:
            s2, s1 = pair
            if "s2" in self.modalities or s1 is None:
                assert self.s2_root is not None
                path = self.s2_root / s2 / f"{s2}_labels_metadata.json"
            else:
                assert self.s1_root is not None
                path = self.s1_root / s1 / f"{s1}_labels_metadata.json"
            return ben19_multi_hot(json_labels(path), str(path))

        labels = parallel_map(label_of, pairs, "BigEarthNet v1 labels")
        keep = [i for i, y in enumerate(labels) if y.any()]
        if len(keep) < len(pairs):
            skipped["no_19_class_label"] = len(pairs) - len(keep)
            log_skipped("BigEarthNetV1", len(pairs) - len(keep), "no 19-class label")
        self.names = [pairs[i][0] for i in keep]
        self.s1_names = [pairs[i][1] for i in keep]
        self.labels = (
            np.stack([labels[i] for i in keep]) if keep else np.zeros((0, 19), dtype=np.float32)
        ).astype(np.float32)
        self.info = DatasetInfo(
            kind="bigearthnet",
            source={
                "format": "bigearthnet-v1",
                "s2_root": str(self.s2_root) if self.s2_root else None,
                "s1_root": str(self.s1_root) if self.s1_root else None,
                "split_file": str(split_file) if split_file else None,
                "exclude_files": [str(f) for f in exclude_files],
                "nan_policy": nan_policy,
            },
            skipped=skipped,
        )

    def _s1_pairs_from_json(self) -> dict[str, str]:
        """S2 name -> S1 name from every S1 JSON's ``corresponding_s2_patch``."""
        assert self.s1_root is not None
        s1_names = sorted(p.name for p in self.s1_root.iterdir() if p.is_dir())

        def s2_of(s1: str) -> str:
            path = self.s1_root / s1 / f"{s1}_labels_metadata.json"  # type: ignore[operator]
            s2 = read_json(path).get("corresponding_s2_patch")
            if not isinstance(s2, str) or not s2:
                raise DatasetError(f"{path}: no 'corresponding_s2_patch' in the S1 metadata JSON")
            return s2

        out: dict[str, str] = {}
        for s1, s2 in zip(s1_names, parallel_map(s2_of, s1_names, "BigEarthNet v1 S1 pairing"), strict=True):
            if s2 in out:
                raise DatasetError(f"{self.s1_root}: S2 patch {s2} is paired with both {out[s2]} and {s1}")
            out[s2] = s1
        return out

    def read_raw(self, index: int) -> RawSample:
        s2_name, s1_name = self.names[index], self.s1_names[index]
        with gdal_env():
            s2 = (
                read_ben_s2(self.s2_root / s2_name, s2_name, self.nan_policy)  # type: ignore[operator]
                if "s2" in self.modalities
                else None
            )
            s1 = (
                read_ben_s1(self.s1_root / s1_name, s1_name, self.nan_policy)  # type: ignore[operator]
                if "s1" in self.modalities
                else None
            )
        return RawSample(s1=s1, s2=s2, label=self.labels[index], name=s2_name)


def v2_s2_folder(s2_dir: Path, patch_id: str) -> Path:
    """reBEN S2 patch folder: ``<s2_dir>/<tile>/<patch_id>``, tile = patch_id without ``_x_y``."""
    return s2_dir / patch_id.rsplit("_", 2)[0] / patch_id


def v2_s1_folder(s1_dir: Path, s1_name: str) -> Path:
    """reBEN S1 patch folder: ``<s1_dir>/<product>/<s1_name>``, product = s1_name without ``_tile_x_y``."""
    return s1_dir / s1_name.rsplit("_", 3)[0] / s1_name


class BigEarthNetV2(RawDataset):
    """BigEarthNet v2.0 (reBEN) from its folders and ``metadata.parquet``.

    Args:
        root: folder holding ``metadata.parquet``, ``BigEarthNet-S2`` and ``BigEarthNet-S1``.
        split: 'train' | 'validation' ('val') | 'test' | 'all', from the parquet ``split`` column.
        normalize, bands, image_size, fit, nan_policy: as :class:`BigEarthNetV1`.
        metadata, s2_dir, s1_dir: override the three locations.
        exclude_snow_cloud: drop rows flagged ``contains_seasonal_snow`` or ``contains_cloud_or_shadow``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        normalize: bool = True,
        bands: str = "all",
        *,
        image_size: int = BEN_IMAGE_SIZE,
        fit: Fit = "resize",
        nan_policy: NanPolicy = "error",
        metadata: str | os.PathLike[str] | None = None,
        s2_dir: str | os.PathLike[str] | None = None,
        s1_dir: str | os.PathLike[str] | None = None,
        exclude_snow_cloud: bool = True,
    ) -> None:
        import pyarrow.parquet as pq

        check_nan_policy(nan_policy)
        self.modalities = modalities_of(bands)
        root = Path(root)
        self.split = canonical_split(split)
        meta_path = Path(metadata) if metadata is not None else root / V2_METADATA
        self.s2_dir = Path(s2_dir) if s2_dir is not None else root / V2_S2_DIR
        self.s1_dir = Path(s1_dir) if s1_dir is not None else root / V2_S1_DIR
        if not meta_path.is_file():
            raise MissingDataError(f"{meta_path}: missing file")
        for mod, folder in (("s2", self.s2_dir), ("s1", self.s1_dir)):
            if mod in self.modalities and not folder.is_dir():
                raise MissingDataError(f"{folder}: folder not found")
        try:
            table = pq.read_table(meta_path)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise DatasetError(f"{meta_path}: unreadable parquet ({e})") from e
        missing = [c for c in V2_COLUMNS if c not in table.column_names]
        if missing:
            raise DatasetError(f"{meta_path}: missing column(s) {missing}")
        cols = {
            c: table.column(c).to_pylist()
            for c in table.column_names
            if c in V2_COLUMNS or c in ("contains_seasonal_snow", "contains_cloud_or_shadow")
        }
        skipped: dict[str, int] = {}
        rows = range(table.num_rows)
        if self.split != "all":
            rows = [i for i in rows if canonical_split(cols["split"][i]) == self.split]
        rows = list(rows)
        if exclude_snow_cloud:
            flags = [cols.get("contains_seasonal_snow"), cols.get("contains_cloud_or_shadow")]
            kept = [i for i in rows if not any(f is not None and f[i] for f in flags)]
            if len(kept) < len(rows):
                skipped["snow_or_cloud"] = len(rows) - len(kept)
            rows = kept
        names, s1_names, labels = [], [], []
        for i in rows:
            lab = cols["labels"][i]
            if lab is None or not isinstance(lab, list):
                raise DatasetError(f"{meta_path}: row {i} ({cols['patch_id'][i]}) has no labels list")
            y = ben19_multi_hot(lab, f"{meta_path} row {i} ({cols['patch_id'][i]})")
            if not y.any():
                skipped["no_19_class_label"] = skipped.get("no_19_class_label", 0) + 1
                continue
            names.append(cols["patch_id"][i])
            s1_names.append(cols["s1_name"][i])
            labels.append(y)
        if skipped.get("no_19_class_label"):
            log_skipped("BigEarthNetV2", skipped["no_19_class_label"], "no 19-class label")
        self.names, self.s1_names = names, s1_names
        self.labels = np.stack(labels).astype(np.float32) if labels else np.zeros((0, 19), np.float32)
        self.nan_policy = nan_policy
        self.transform = ItemTransform(image_size=image_size, normalize=normalize, fit=fit)
        self.layout = BEN_LAYOUT
        self.info = DatasetInfo(
            kind="bigearthnet",
            source={
                "format": "bigearthnet-v2",
                "metadata": str(meta_path),
                "s2_dir": str(self.s2_dir),
                "s1_dir": str(self.s1_dir),
                "split": self.split,
                "exclude_snow_cloud": exclude_snow_cloud,
                "nan_policy": nan_policy,
            },
            skipped=skipped,
        )

    def read_raw(self, index: int) -> RawSample:
        name, s1_name = self.names[index], self.s1_names[index]
        with gdal_env():
            s2 = (
                read_ben_s2(v2_s2_folder(self.s2_dir, name), name, self.nan_policy)
                if "s2" in self.modalities
                else None
            )
            s1 = (
                read_ben_s1(v2_s1_folder(self.s1_dir, s1_name), s1_name, self.nan_policy)
                if "s1" in self.modalities
                else None
            )
        return RawSample(s1=s1, s2=s2, label=self.labels[index], name=name)
