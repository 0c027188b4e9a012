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
default). A split file that lists no patch is an error; a patch on two lines of a split file or on
two parquet rows is *listed twice* or *in two splits* (see :mod:`fusmae_fast.data.bad_patches`:
an error naming the file and the patch, or with ``skip_bad`` left out and recorded).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fusmae_fast.data.bad_patches import IN_TWO_SPLITS, LISTED_TWICE, MISSING_FILE, BadPatches
from fusmae_fast.data.bands import BEN_IMAGE_SIZE, BEN_S2_GROUPS, S1_BANDS, S2_BANDS
from fusmae_fast.data.errors import DatasetError, MissingDataError
from fusmae_fast.data.geotiff import NanPolicy, check_nan_policy, gdal_env, read_georeference, read_geotiff
from fusmae_fast.data.labels import ben19_multi_hot
from fusmae_fast.data.raw_dataset import RawDataset, log_skipped, modalities_of, parallel_map
from fusmae_fast.data.raw_sample import BEN_LAYOUT, DatasetInfo, Georeference, RawSample
from fusmae_fast.data.splits import canonical_split, check_not_empty, read_name_list, read_rows
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


def ben_band_files(folder: Path, stem: str, bands: Iterable[str]) -> list[Path]:
    """The single-band GeoTIFFs ``<folder>/<stem>_<band>.tif`` of a BigEarthNet patch."""
    return [folder / f"{stem}_{b}.tif" for b in bands]


def _read_bands(
    folder: Path, stem: str, bands: tuple[str, ...] | list[str], size: int, dtype: type, nan_policy: NanPolicy
) -> np.ndarray:
    """(bands, size, size) of ``dtype``: one single-band GeoTIFF ``<stem>_<band>.tif`` per band."""
    return np.stack(
        [
            read_geotiff(path, count=1, shape=(size, size), dtype=dtype, nan_policy=nan_policy)[0]
            for path in ben_band_files(folder, stem, bands)
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


def read_split_pairs(
    path: str | os.PathLike[str], bad: BadPatches | None = None
) -> list[tuple[str, str | None]]:
    """A split file: ``S2name,S1name`` lines (BigEarthNet-MM CSV) or one ``S2name`` a line.

    A first line that is not a patch name (a header) is skipped. A patch on a second line is
    *listed twice* (see :mod:`~fusmae_fast.data.bad_patches`): an error, or with a skipping ``bad``
    the later line is left out. A file that lists no patch is an error.
    """
    bad = bad if bad is not None else BadPatches(skip=False)
    out: list[tuple[str, str | None]] = []
    seen: dict[str, int] = {}
    for i, (line, row) in enumerate(read_rows(path)):
        if not row[0].startswith("S2"):
            if i == 0:
                continue
            raise DatasetError(f"{path}: line {line}: {row[0]!r} is not an S2 patch name")
        s1 = row[1] if len(row) > 1 and row[1] else None
        if s1 is not None and not s1.startswith("S1"):
            raise DatasetError(f"{path}: line {line}: {s1!r} is not an S1 patch name")
        if row[0] in seen:
            bad.add(LISTED_TWICE, row[0], str(path), f"listed twice (lines {seen[row[0]]} and {line})")
            continue
        seen[row[0]] = line
        out.append((row[0], s1))
    check_not_empty(path, out)
    return out


def first_missing(paths: Iterable[Path]) -> Path | None:
    """The first of ``paths`` that is not a file (one folder listing per folder), or None."""
    listed: dict[Path, set[str]] = {}
    for path in paths:
        if path.parent not in listed:
            try:
                listed[path.parent] = set(os.listdir(path.parent))
            except OSError:
                listed[path.parent] = set()
        if path.name not in listed[path.parent]:
            return path
    return None


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
        skip_bad: leave out patches listed twice or with a missing file (each recorded in
            ``info.skipped_patches``) instead of stopping at the first (see
            :mod:`~fusmae_fast.data.bad_patches`).
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
        skip_bad: bool = False,
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
        bad = BadPatches(skip_bad)

        need_s1 = "s1" in self.modalities
        if split_file is not None:
            self.split_origin = str(split_file)
            pairs = read_split_pairs(split_file, bad)
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
            self.split_origin = f"every S2 patch with an S1 pair ({self.s1_root})"
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
            self.split_origin = f"every S2 patch folder in {self.s2_root}"
            pairs = [(p.name, None) for p in sorted(self.s2_root.iterdir()) if p.is_dir()]

        excluded: set[str] = set()
        for f in exclude_files:
            excluded.update(name for _, name in read_name_list(f, prefix="S2"))
        if excluded:
            before = len(pairs)
            pairs = [p for p in pairs if p[0] not in excluded]
            if before - len(pairs):
                skipped["excluded"] = before - len(pairs)
        if skip_bad:
            missing = parallel_map(lambda p: first_missing(self._files(*p)), pairs, "BigEarthNet v1 files")
            for (s2, _), path in zip(pairs, missing, strict=True):
                if path is not None:
                    bad.add(MISSING_FILE, s2, str(path), "missing file")
            pairs = [p for p, path in zip(pairs, missing, strict=True) if path is None]

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
            skipped=bad.merge_into(skipped),
            skipped_patches=bad.records,
        )

    def _files(self, s2: str, s1: str | None) -> list[Path]:
        """Every file patch ``s2`` needs: its label JSON and the band files of the modalities read."""
        out = []
        if "s2" in self.modalities or s1 is None:
            assert self.s2_root is not None
            out.append(self.s2_root / s2 / f"{s2}_labels_metadata.json")
        if "s2" in self.modalities:
            out += ben_band_files(self.s2_root / s2, s2, S2_BANDS)  # type: ignore[operator]
        if "s1" in self.modalities and s1 is not None:
            assert self.s1_root is not None
            if "s2" not in self.modalities:
                out.append(self.s1_root / s1 / f"{s1}_labels_metadata.json")
            out += ben_band_files(self.s1_root / s1, s1, S1_BANDS)
        return out

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

    def georeference(self, index: int) -> Georeference:
        """CRS and bounds of the patch's S2 band B02 (of its S1 VV band when S2 is not read)."""
        s2_name, s1_name = self.names[index], self.s1_names[index]
        if "s2" in self.modalities:
            path = ben_band_files(self.s2_root / s2_name, s2_name, ("B02",))[0]  # type: ignore[operator]
        else:
            path = ben_band_files(self.s1_root / s1_name, s1_name, ("VV",))[0]  # type: ignore[operator]
        with gdal_env():
            return read_georeference(path)


def v2_s2_folder(s2_dir: Path, patch_id: str) -> Path:
    """reBEN S2 patch folder: ``<s2_dir>/<tile>/<patch_id>``, tile = patch_id without ``_x_y``."""
    return s2_dir / patch_id.rsplit("_", 2)[0] / patch_id


def v2_s1_folder(s1_dir: Path, s1_name: str) -> Path:
    """reBEN S1 patch folder: ``<s1_dir>/<product>/<s1_name>``, product = s1_name without ``_tile_x_y``."""
    return s1_dir / s1_name.rsplit("_", 3)[0] / s1_name


def _split_key(value: Any) -> str:
    """A parquet ``split`` value as a canonical split name when it is one (else as written)."""
    try:
        return canonical_split(value)
    except ValueError:
        return str(value)


def unique_v2_rows(
    patch_ids: list[str], splits: list[Any], meta_path: Path, split: str, bad: BadPatches
) -> list[int]:
    """The rows of ``metadata.parquet`` that hold each patch once.

    A patch on rows of different splits is *in two splits* (left out), on two rows of one split
    *listed twice* (the first row stays): see :mod:`~fusmae_fast.data.bad_patches`. Only faults
    that concern ``split`` ('all': every split) are reported to ``bad``.
    """
    rows_of: dict[str, list[int]] = {}
    for i, pid in enumerate(patch_ids):
        rows_of.setdefault(pid, []).append(i)
    drop: set[int] = set()
    for pid, rows in rows_of.items():
        if len(rows) == 1:
            continue
        in_splits = list(dict.fromkeys(_split_key(splits[i]) for i in rows))
        where = ", ".join(f"{i} ('{_split_key(splits[i])}')" for i in rows)
        concerns = split == "all" or split in in_splits
        if len(in_splits) > 1:
            drop.update(rows)
            if concerns:
                bad.add(IN_TWO_SPLITS, pid, str(meta_path), f"in two splits (rows {where})")
        else:
            drop.update(rows[1:])
            if concerns:
                bad.add(LISTED_TWICE, pid, str(meta_path), f"listed twice (rows {where})")
    return [i for i in range(len(patch_ids)) if i not in drop]


class BigEarthNetV2(RawDataset):
    """BigEarthNet v2.0 (reBEN) from its folders and ``metadata.parquet``.

    Args:
        root: folder holding ``metadata.parquet``, ``BigEarthNet-S2`` and ``BigEarthNet-S1``.
        split: 'train' | 'validation' ('val') | 'test' | 'all', from the parquet ``split`` column.
        normalize, bands, image_size, fit, nan_policy: as :class:`BigEarthNetV1`.
        metadata, s2_dir, s1_dir: override the three locations.
        exclude_snow_cloud: drop rows flagged ``contains_seasonal_snow`` or ``contains_cloud_or_shadow``.
        skip_bad: leave out patches on two rows or with a missing file (each recorded in
            ``info.skipped_patches``) instead of stopping at the first (see
            :mod:`~fusmae_fast.data.bad_patches`).
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
        skip_bad: bool = False,
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
        bad = BadPatches(skip_bad)
        self.split_origin = str(meta_path)
        rows = unique_v2_rows(cols["patch_id"], cols["split"], meta_path, self.split, bad)
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
        if skip_bad:
            missing = parallel_map(
                lambda pair: first_missing(self._files(*pair)),
                list(zip(names, s1_names, strict=True)),
                "BigEarthNet v2 files",
            )
            for name, path in zip(names, missing, strict=True):
                if path is not None:
                    bad.add(MISSING_FILE, name, str(path), "missing file")
            keep = [j for j, path in enumerate(missing) if path is None]
            names, s1_names, labels = (
                [names[j] for j in keep],
                [s1_names[j] for j in keep],
                [labels[j] for j in keep],
            )
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
            skipped=bad.merge_into(skipped),
            skipped_patches=bad.records,
        )

    def _files(self, name: str, s1_name: str) -> list[Path]:
        """The band files of patch ``name`` for the modalities read."""
        out = []
        if "s2" in self.modalities:
            out += ben_band_files(v2_s2_folder(self.s2_dir, name), name, S2_BANDS)
        if "s1" in self.modalities:
            out += ben_band_files(v2_s1_folder(self.s1_dir, s1_name), s1_name, S1_BANDS)
        return out

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

    def georeference(self, index: int) -> Georeference:
        """CRS and bounds of the patch's S2 band B02 (of its S1 VV band when S2 is not read)."""
        name, s1_name = self.names[index], self.s1_names[index]
        if "s2" in self.modalities:
            path = ben_band_files(v2_s2_folder(self.s2_dir, name), name, ("B02",))[0]
        else:
            path = ben_band_files(v2_s1_folder(self.s1_dir, s1_name), s1_name, ("VV",))[0]
        with gdal_env():
            return read_georeference(path)
