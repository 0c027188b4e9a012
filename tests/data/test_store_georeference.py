"""Stores keep georeference: each patch's EPSG code and bounds as its reader gives them (issue 16, 3)."""

from __future__ import annotations

import pytest

from fusmae_fast.data import PackedDataset
from fusmae_fast.data.errors import NoGeoreferenceError
from fusmae_fast.data.packing import pack


@pytest.mark.parametrize("kind", ["v1", "v2", "sen12ms"])
def test_store_records_the_readers_georeference(kind, train_test_sources, tmp_path):
    import rasterio

    sources = train_test_sources(kind)
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


def test_store_without_georeference_says_convert_again(train_test_sources, tmp_path):
    import json

    pack(train_test_sources("v1"), tmp_path / "store", workers=0, progress=False)
    index_path = tmp_path / "store" / "index.json"
    index = json.loads(index_path.read_text())
    del index["georeference"]
    index_path.write_text(json.dumps(index))
    store = PackedDataset(tmp_path / "store", "train")
    with pytest.raises(NoGeoreferenceError, match="convert it again"):
        store.georeference(0)
    assert len(store[0]["s2"])  # the images are still served


def test_truncated_georeference_array_is_named_on_open(train_test_sources, tmp_path):
    import os

    from fusmae_fast.data import DatasetError

    pack(train_test_sources("v1"), tmp_path / "store", workers=0, progress=False)
    path = tmp_path / "store" / "geo_bounds.npy"
    os.truncate(path, path.stat().st_size - 8)
    with pytest.raises(DatasetError, match="geo_bounds"):
        PackedDataset(tmp_path / "store", "train")
