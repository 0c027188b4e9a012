"""Every reader round-trips the synthetic writer's output: values, shapes, labels, pairing, splits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from fusmae_fast.data import SEN12MS, BigEarthNetV1, BigEarthNetV2
from fusmae_fast.data.bands import BEN_S2_GROUPS, S2_BANDS
from fusmae_fast.data.sen12ms import hash_split


def _v1(root: Path, split_file: str | None = "train", **kw) -> BigEarthNetV1:
    sf = root / "splits" / f"{split_file}.csv" if split_file else None
    return BigEarthNetV1(root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0", sf, **kw)


def _assert_raw_equal(ds, i: int, written: dict) -> None:
    raw = ds.read_raw(i)
    for got, want in zip(raw.s2, written["s2"], strict=True):
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, want)
    assert raw.s1.dtype == np.float32
    np.testing.assert_array_equal(raw.s1, written["s1"])


def test_v1_split_file_values_labels_and_skips(v1_root) -> None:
    root, m = v1_root
    ds = _v1(root)
    assert ds.names == m.splits["train"] and len(ds) == 8
    assert ds.info.skipped == {"no_19_class_label": 2}
    assert ds.labels.shape == (8, 19) and ds.labels.dtype == np.float32
    for i, name in enumerate(ds.names):
        w = m.arrays[name]
        _assert_raw_equal(ds, i, w)
        assert np.flatnonzero(ds.labels[i]).tolist() == w["label"]
        assert ds.s1_names[i] == w["s1_name"]
    item = _v1(root, normalize=False)[0]
    w = m.arrays[ds.names[0]]
    for g, (names, size) in enumerate(BEN_S2_GROUPS):
        up = F.interpolate(
            torch.from_numpy(w["s2"][g].astype(np.float32))[None], size=(120, 120), mode="bilinear"
        )[0]
        for j, b in enumerate(names):
            k = S2_BANDS.index(b)
            if size == 120:  # 10 m bands exactly as stored
                assert torch.equal(item["s2"][k], torch.from_numpy(w["s2"][g][j].astype(np.float32)))
            else:
                torch.testing.assert_close(item["s2"][k], up[j], rtol=1e-5, atol=1e-2)
    assert torch.equal(item["s1"], torch.from_numpy(w["s1"]))
    assert torch.equal(item["label"], torch.from_numpy(ds.labels[0]))
    assert [len(_v1(root, s)) for s in ("val", "test")] == [2, 2]


def test_v1_pairing_through_s1_json_and_exclusions(v1_root) -> None:
    root, m = v1_root
    excl = [root / "patches_with_seasonal_snow.csv", root / "patches_with_cloud_and_shadow.csv"]
    ds = _v1(root, None, exclude_files=excl)
    labelled = sorted(n for s in m.splits.values() for n in s)
    assert ds.names == labelled  # sorted S2 folder names, snow/cloud out, unlabelled skipped
    assert ds.info.skipped == {"excluded": 2, "no_19_class_label": 2}
    for i, name in enumerate(ds.names):
        assert ds.s1_names[i] == m.arrays[name]["s1_name"]
    assert len(_v1(root, None)) == 14  # without exclusion lists, snow and cloud patches are read


def test_v1_one_digit_hour_names_and_layout(v1_root) -> None:
    root, m = v1_root
    short = [n for n in m.arrays if re.search(r"_\d{8}T\d{5}_\d+_\d+$", n)]
    assert short, "the writer must produce one-digit-hour names"
    ds = _v1(root, None)
    for name in short:
        if name in ds.names:
            _assert_raw_equal(ds, ds.names.index(name), m.arrays[name])
    name = ds.names[0]
    folder = root / "BigEarthNet-v1.0" / name
    for names, size in BEN_S2_GROUPS:
        for b in names:
            with rasterio.open(folder / f"{name}_{b}.tif") as src:
                assert (src.count, src.height, src.width, src.dtypes[0]) == (1, size, size, "uint16")
                assert src.crs is not None and src.compression is None
                assert abs(src.res[0] - 1200 / size) < 1e-9
    s1 = m.arrays[name]["s1_name"]
    meta = json.loads((root / "BigEarthNet-S1-v1.0" / s1 / f"{s1}_labels_metadata.json").read_text())
    assert meta["corresponding_s2_patch"] == name and list(meta["coordinates"]) == [
        "ulx",
        "uly",
        "lrx",
        "lly",
    ]
    with rasterio.open(root / "BigEarthNet-S1-v1.0" / s1 / f"{s1}_VV.tif") as src:
        assert (src.height, src.width, src.dtypes[0]) == (120, 120, "float32")


def test_v1_single_modality(v1_root) -> None:
    root, _ = v1_root
    ds = BigEarthNetV1(root / "BigEarthNet-v1.0", None, root / "splits" / "test.csv", bands="s2")
    item = ds[1]
    assert "s1" not in item and item["s2"].shape == (12, 120, 120)
    with pytest.raises(ValueError, match="s1_root"):
        BigEarthNetV1(root / "BigEarthNet-v1.0", None, None, bands="all")


def test_v2_values_splits_and_flags(v2_root) -> None:
    root, m = v2_root
    ds = BigEarthNetV2(root, "train")
    assert ds.names == m.splits["train"]
    assert ds.info.skipped == {"snow_or_cloud": 2, "no_19_class_label": 1}
    for i, name in enumerate(ds.names):
        _assert_raw_equal(ds, i, m.arrays[name])
        assert np.flatnonzero(ds.labels[i]).tolist() == m.arrays[name]["label"]
        tile = name.rsplit("_", 2)[0]
        assert (root / "BigEarthNet-S2" / tile / name / f"{name}_B8A.tif").is_file()
    assert BigEarthNetV2(root, "val").names == m.splits["validation"]
    assert BigEarthNetV2(root, "test").names == m.splits["test"]
    assert len(BigEarthNetV2(root, "train", exclude_snow_cloud=False)) == 10
    item = ds[0]
    assert item["s2"].shape == (12, 120, 120) and item["s1"].shape == (2, 120, 120)


def test_sen12ms_values_labels_and_official_lists(sen_root, igbp_to_simplified: dict[int, int]) -> None:
    root, m = sen_root
    ds = SEN12MS(root, split="train", normalize=False)  # train = all minus val_list and test_list
    assert ds.names == m.splits["train"] and ds.info.skipped == {"no_valid_igbp": 1}
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (8,)
    keep = [i for i in range(13) if i != 10]  # B10 dropped
    for i, name in enumerate(ds.names):
        w = m.arrays[name]
        raw = ds.read_raw(i)
        np.testing.assert_array_equal(raw.s2[0], w["s2"][keep])
        np.testing.assert_array_equal(raw.s1, w["s1"])
        counts = np.bincount([igbp_to_simplified[int(c)] for c in w["lc"][0].ravel()], minlength=10)
        assert ds.labels[i] == counts.argmax()
    item = ds[0]
    w = m.arrays[ds.names[0]]
    assert item["s2"].shape == (12, 120, 120)  # default fit: centre crop 256 -> 120
    np.testing.assert_array_equal(item["s2"].numpy(), w["s2"][keep, 68:188, 68:188].astype(np.float32))
    assert item["label"].dtype == torch.int64 and item["label"].shape == ()
    val = SEN12MS(root, split="validation")
    assert val.names == m.splits["validation"]
    assert SEN12MS(root, split_file=root / "splits" / "val_list.txt").names == val.names
    assert SEN12MS(root, split="test", fit="resize", image_size=64)[0]["s2"].shape == (12, 64, 64)


def _link_tree(src: Path, dst: Path, nested: bool) -> None:
    """Same scenes without the splits/ folder; ``nested`` puts each modality under ``<season>_<mod>/``."""
    for season in src.glob("ROIs*"):
        for scene in season.iterdir():
            mod = scene.name.split("_")[0]
            parent = dst / f"{season.name}_{mod}" / season.name if nested else dst / season.name
            parent.mkdir(parents=True, exist_ok=True)
            (parent / scene.name).symlink_to(scene)


def test_sen12ms_scene_lists_hash_split_and_nested_layout(sen_root, tmp_path: Path) -> None:
    root, m = sen_root
    everything = SEN12MS(root, split="all")
    scene = everything.patches[0][:2]
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"{scene[0]}/s1_{scene[1]}\n")
    assert all(p[:2] == scene for p in SEN12MS(root, split_file=listing).patches)

    flat, nested = tmp_path / "flat", tmp_path / "nested"
    _link_tree(root, flat, nested=False)
    _link_tree(root, nested, nested=True)
    assert SEN12MS(nested, split="all").names == everything.names
    parts = {s: SEN12MS(flat, split=s) for s in ("train", "validation", "test")}
    assert sorted(n for d in parts.values() for n in d.names) == sorted(everything.names)
    for s, d in parts.items():
        assert all(hash_split(season, sc) == s for season, sc, _ in d.patches)
        assert d.info.source["split_source"] == "scene hash 80/10/10"
    assert hash_split("ROIs1158_spring", 7) == hash_split("ROIs1158_spring", 7)
