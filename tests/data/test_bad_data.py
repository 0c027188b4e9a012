"""Bad data -> a clear error naming the file (issue 5 item 3), one case per row."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fusmae_fast.data import SEN12MS, BigEarthNetV1, BigEarthNetV2, DatasetError, MissingDataError
from fusmae_fast.data.geotiff import write_geotiff
from fusmae_fast.data.synthetic import write_bigearthnet_v1, write_bigearthnet_v2, write_sen12ms


@pytest.fixture(scope="module")
def v1_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_v1")
    write_bigearthnet_v1(root, 6, seed=9)
    return root


@pytest.fixture
def v1(v1_template: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """A private copy of a 6-patch v1 dataset, and the first train patch's S2 and S1 names."""
    root = tmp_path / "v1"
    shutil.copytree(v1_template, root)
    s2, s1 = (root / "splits" / "train.csv").read_text().splitlines()[0].split(",")
    return root, s2, s1


def _open(root: Path, split: str | None = "train", **kw) -> BigEarthNetV1:
    sf = root / "splits" / f"{split}.csv" if split else None
    return BigEarthNetV1(root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0", sf, **kw)


def _s2(root: Path, name: str, band: str) -> Path:
    return root / "BigEarthNet-v1.0" / name / f"{name}_{band}.tif"


def _s1(root: Path, name: str, pol: str) -> Path:
    return root / "BigEarthNet-S1-v1.0" / name / f"{name}_{pol}.tif"


def _nan_vv(root: Path, s2: str, s1: str) -> Path:
    path = _s1(root, s1, "VV")
    data = np.full((120, 120), -11.0, np.float32)
    data[5, 7] = np.nan
    data[9, 9] = np.inf
    write_geotiff(path, data)
    return path


def _j2(root: Path, s2: str) -> Path:
    return root / "BigEarthNet-v1.0" / s2 / f"{s2}_labels_metadata.json"


def _j1(root: Path, s1: str) -> Path:
    return root / "BigEarthNet-S1-v1.0" / s1 / f"{s1}_labels_metadata.json"


def _rewrite_json(path: Path, drop: str | None = None, labels: list[str] | None = None) -> Path:
    obj = json.loads(path.read_text())
    if drop:
        del obj[drop]
    if labels is not None:
        obj["labels"] = labels
    path.write_text(json.dumps(obj))
    return path


def _unlink(path: Path) -> Path:
    path.unlink()
    return path


def _tiff(path: Path, data: np.ndarray) -> Path:
    write_geotiff(path, data)
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


Corrupt = Callable[[Path, str, str], Path]
# (case, corrupt(root, s2 name, s1 name) -> the path the error must name, error type, message, when raised)
CASES: list[tuple[str, Corrupt, type, str, str]] = [
    ("missing band", lambda r, s2, s1: _unlink(_s2(r, s2, "B05")), MissingDataError, "missing file", "read"),
    (
        "wrong shape",
        lambda r, s2, s1: _tiff(_s2(r, s2, "B05"), np.zeros((61, 61), np.uint16)),
        DatasetError,
        "expected 60x60 pixels, got 61x61",
        "read",
    ),
    (
        "unreadable tiff",
        lambda r, s2, s1: _text(_s2(r, s2, "B02"), "II*\x00 not a tiff" * 10),
        DatasetError,
        "unreadable GeoTIFF",
        "read",
    ),
    (
        "wrong dtype",
        lambda r, s2, s1: _tiff(_s2(r, s2, "B02"), np.zeros((120, 120), np.float32)),
        DatasetError,
        "expected dtype uint16",
        "read",
    ),
    (
        "two bands",
        lambda r, s2, s1: _tiff(_s1(r, s1, "VH"), np.zeros((2, 120, 120), np.float32)),
        DatasetError,
        r"expected 1 band\(s\)",
        "read",
    ),
    ("nan and inf", _nan_vv, DatasetError, r"2 NaN/Inf pixel\(s\)", "read"),
    (
        "json without labels",
        lambda r, s2, s1: _rewrite_json(_j2(r, s2), drop="labels"),
        DatasetError,
        "no 'labels' list",
        "open",
    ),
    (
        "truncated json",
        lambda r, s2, s1: _text(_j2(r, s2), _j2(r, s2).read_text()[:20]),
        DatasetError,
        "unreadable JSON",
        "open",
    ),
    (
        "unknown label",
        lambda r, s2, s1: _rewrite_json(_j2(r, s2), labels=["Pastures", "Lava fields"]),
        DatasetError,
        "unknown BigEarthNet label 'Lava fields'",
        "open",
    ),
    ("missing label json", lambda r, s2, s1: _unlink(_j2(r, s2)), MissingDataError, "missing file", "open"),
    (
        "s1 json without pairing",
        lambda r, s2, s1: _rewrite_json(_j1(r, s1), drop="corresponding_s2_patch"),
        DatasetError,
        "no 'corresponding_s2_patch'",
        "open-unpaired",
    ),
    (
        "bad split line",
        lambda r, s2, s1: _text(
            r / "splits" / "train.csv", (r / "splits" / "train.csv").read_text() + "not-a-patch,S1A_x\n"
        ),
        DatasetError,
        r"line \d+: 'not-a-patch' is not an S2 patch name",
        "open",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_data_is_named(v1, case) -> None:
    root, s2, s1 = v1
    _, corrupt, error, pattern, when = case
    path = corrupt(root, s2, s1)
    with pytest.raises(error, match=pattern) as info:
        if when == "open-unpaired":
            _open(root, None)
        else:
            ds = _open(root)
            ds[ds.names.index(s2)]
    assert str(path) in str(info.value)


def test_nan_policy_zero(v1) -> None:
    root, s2, s1 = v1
    _nan_vv(root, s2, s1)
    ds = _open(root, nan_policy="zero", normalize=False)
    vv = ds[ds.names.index(s2)]["s1"][0]
    assert vv[5, 7] == 0 and vv[9, 9] == 0 and vv[0, 0] == -11.0
    with pytest.raises(ValueError, match="nan_policy"):
        _open(root, nan_policy="mean")


def test_missing_root_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=str(tmp_path / "nowhere")):
        BigEarthNetV1(tmp_path / "nowhere", tmp_path)


def test_v2_metadata_without_columns(tmp_path: Path) -> None:
    write_bigearthnet_v2(tmp_path, 6, seed=1)
    table = pq.read_table(tmp_path / "metadata.parquet").drop(["s1_name"])
    pq.write_table(table, tmp_path / "metadata.parquet")
    with pytest.raises(DatasetError, match=r"metadata\.parquet: missing column\(s\) \['s1_name'\]"):
        BigEarthNetV2(tmp_path, "train")


def test_sen12ms_wrong_band_count(tmp_path: Path) -> None:
    m = write_sen12ms(tmp_path, 6, seed=2)
    ds = SEN12MS(tmp_path, split="train")
    name = m.splits["train"][0]
    season, _, scene, p = name.rsplit("_", 3)
    path = tmp_path / season / f"s2_{scene}" / f"{name}.tif"
    write_geotiff(path, np.zeros((12, 256, 256), np.uint16))
    with pytest.raises(DatasetError, match=r"expected 13 band\(s\), the file has 12") as info:
        ds[ds.names.index(name)]
    assert str(path) in str(info.value)
