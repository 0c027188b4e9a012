"""Stores keep georeference: each patch's EPSG code and bounds as its reader gives them (issue 16, 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusmae_fast.data import SEN12MS, BigEarthNetV1, BigEarthNetV2, PackedDataset
from fusmae_fast.data.errors import NoGeoreferenceError
from fusmae_fast.data.packing import pack


def _v1_sources(root: Path):
    s2, s1 = root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0"
    return [
        (s, BigEarthNetV1(s2, s1, root / "splits" / f"{f}.csv"))
        for s, f in (("train", "train"), ("test", "test"))
    ]


@pytest.mark.parametrize("kind", ["v1", "v2", "sen12ms"])
def test_store_records_the_readers_georeference(kind, v1_root, v2_root, sen_root, tmp_path):
    import rasterio

    if kind == "v1":
        sources = _v1_sources(v1_root[0])
    elif kind == "v2":
        sources = [(s, BigEarthNetV2(v2_root[0], s)) for s in ("train", "test")]
    else:
        sources = [(s, SEN12MS(sen_root[0], split=s)) for s in ("train", "test")]
    index = pack(sources, tmp_path / "store", workers=0, progress=False)
    assert set(index["georeference"]["arrays"]) == {"geo_epsg", "geo_bounds"}
    assert "geo_epsg" not in index["arrays"]  # outside the image arrays' table and checksum
    for split, ds in sources:
        store = PackedDataset(tmp_path / "store", split, verify=True)
        assert store.names == ds.names
        for i in range(len(ds)):
            geo = ds.georeference(i)
            assert store.georeference(i) == geo
            assert 32601 <= geo.epsg <= 32660  # the synthetic writers' UTM zones
        if kind == "v1":  # the reader's georeference is that of the patch's B02 file
            name = ds.names[0]
            with rasterio.open(ds.s2_root / name / f"{name}_B02.tif") as src:
                b = src.bounds
                assert ds.georeference(0).bounds == (b.left, b.bottom, b.right, b.top)
                assert ds.georeference(0).epsg == src.crs.to_epsg()


def test_store_without_georeference_says_convert_again(v1_root, tmp_path):
    import json

    pack(_v1_sources(v1_root[0]), tmp_path / "store", workers=0, progress=False)
    index_path = tmp_path / "store" / "index.json"
    index = json.loads(index_path.read_text())
    del index["georeference"]
    index_path.write_text(json.dumps(index))
    store = PackedDataset(tmp_path / "store", "train")
    with pytest.raises(NoGeoreferenceError, match="convert it again"):
        store.georeference(0)
    assert len(store[0]["s2"])  # the images are still served


def test_truncated_georeference_array_is_named_on_open(v1_root, tmp_path):
    import os

    from fusmae_fast.data import DatasetError

    pack(_v1_sources(v1_root[0]), tmp_path / "store", workers=0, progress=False)
    path = tmp_path / "store" / "geo_bounds.npy"
    os.truncate(path, path.stat().st_size - 8)
    with pytest.raises(DatasetError, match="geo_bounds"):
        PackedDataset(tmp_path / "store", "train")
