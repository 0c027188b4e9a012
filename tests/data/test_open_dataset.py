"""open_dataset auto-detection and its errors; the sample-data command."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusmae_fast.cli import main as cli_main
from fusmae_fast.data import (
    SEN12MS,
    BigEarthNetV1,
    BigEarthNetV2,
    DatasetError,
    MissingDataError,
    PackedDataset,
    open_dataset,
)
from fusmae_fast.data.packing import pack


def test_detects_each_layout(v1_root, v2_root, sen_root, tmp_path: Path) -> None:
    v1, m1 = v1_root
    ds = open_dataset(v1, "val")
    assert isinstance(ds, BigEarthNetV1) and ds.names == m1.splits["validation"]
    assert open_dataset(v1 / "BigEarthNet-v1.0", "test").names == m1.splits["test"]
    everything = open_dataset(v1, "all")  # the snow / cloud lists beside the folders are applied
    assert everything.info.skipped["excluded"] == 2 and len(everything) == 12
    explicit = open_dataset(v1, "train", s2_root=v1 / "BigEarthNet-v1.0", s1_root=v1 / "BigEarthNet-S1-v1.0")
    assert explicit.names == m1.splits["train"]
    v2 = open_dataset(v2_root[0], "validation")
    assert isinstance(v2, BigEarthNetV2) and v2.names == v2_root[1].splits["validation"]
    sen = open_dataset(sen_root[0], "test", image_size=96)
    assert isinstance(sen, SEN12MS) and sen[0]["s2"].shape == (12, 96, 96)
    pack([("validation", v2)], tmp_path / "store", workers=0, progress=False)
    assert isinstance(open_dataset(tmp_path / "store", "val"), PackedDataset)
    with pytest.raises(ValueError, match=r"holds split\(s\) \['validation'\], not 'train'"):
        open_dataset(tmp_path / "store", "train")


def test_errors_name_the_path(tmp_path: Path, v1_root) -> None:
    with pytest.raises(MissingDataError, match=str(tmp_path / "absent")):
        open_dataset(tmp_path / "absent", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=f"{tmp_path / 'empty'}: not a dataset this project reads"):
        open_dataset(tmp_path / "empty", "train")
    bare = tmp_path / "bare"
    (bare / "BigEarthNet-v1.0").mkdir(parents=True)
    (bare / "BigEarthNet-S1-v1.0").mkdir()
    with pytest.raises(MissingDataError, match=f"{bare}: no split file for 'train'"):
        open_dataset(bare, "train")
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        open_dataset(v1_root[0], "holdout")


@pytest.mark.parametrize("fmt", ["bigearthnet-v1", "bigearthnet-v2", "sen12ms"])
def test_sample_data_command(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / fmt
    assert cli_main(["sample-data", str(out), "--format", fmt, "--n", "6", "--workers", "0"]) == 0
    assert [len(open_dataset(out, s)) for s in ("train", "val", "test")] == [4, 1, 1]
    with pytest.raises(SystemExit, match="not empty"):
        cli_main(["sample-data", str(out), "--format", fmt, "--n", "6"])


def test_relative_folder_named_like_sample_is_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli_main(["sample-data", str(tmp_path / "sample_v1"), "--n", "6", "--workers", "0"]) == 0
    monkeypatch.chdir(tmp_path)
    assert isinstance(open_dataset("sample_v1", "train"), BigEarthNetV1)
