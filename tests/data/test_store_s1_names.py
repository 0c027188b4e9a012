"""Stores keep each patch's S1 name (issue 16): in their own index section, checked on open and by
``fusmae-fast verify``; a store converted before they were kept still opens (``s1_names`` None)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fusmae_fast.data import DatasetError, PackedDataset
from fusmae_fast.data.packing import pack


@pytest.mark.parametrize("kind", ["v1", "v2", "sen12ms"])
def test_store_records_the_readers_s1_names(kind, train_test_sources, tmp_path):
    sources = train_test_sources(kind)
    index = pack(sources, tmp_path / "store", workers=0, progress=False)
    assert set(index["s1_names"]["arrays"]) == {"s1_names"}
    assert "s1_names" not in index["arrays"]  # outside the main table, its checksum and bytes per sample
    for split, ds in sources:
        store = PackedDataset(tmp_path / "store", split, verify=True)
        want = ds.s1_names if kind != "sen12ms" else [n.replace("_s2_", "_s1_") for n in ds.names]
        assert store.s1_names == want and store.names == ds.names
        assert all(a != b for a, b in zip(store.s1_names, store.names, strict=True))


def test_store_without_s1_names_still_opens(train_test_sources, tmp_path):
    pack(train_test_sources("v1"), tmp_path / "store", workers=0, progress=False)
    index_path = tmp_path / "store" / "index.json"
    index = json.loads(index_path.read_text())
    del index["s1_names"]  # as a convert before stores kept S1 names wrote it
    index_path.write_text(json.dumps(index))
    (tmp_path / "store" / "s1_names.npy").unlink()
    store = PackedDataset(tmp_path / "store", "train", verify=True)
    assert store.s1_names is None and len(store.names) == len(store)
    assert len(store[0]["s1"])


def test_verify_checks_the_s1_names(train_test_sources, tmp_path):
    pack(train_test_sources("v1"), tmp_path / "store", workers=0, progress=False)
    path = tmp_path / "store" / "s1_names.npy"
    with open(path, "r+b") as f:  # flip a byte of the last name
        f.seek(-1, os.SEEK_END)
        byte = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x01]))
    proc = subprocess.run(
        [sys.executable, "-m", "fusmae_fast.cli", "verify", str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    bad = [line for line in proc.stderr.splitlines() if line.startswith("BAD")]
    assert len(bad) == 1 and "s1_names.npy" in bad[0] and "checksum mismatch" in bad[0]
    with pytest.raises(DatasetError, match="s1_names.npy: checksum mismatch"):
        PackedDataset(tmp_path / "store", "train", verify=True)

    os.truncate(path, path.stat().st_size - 4)
    with pytest.raises(DatasetError, match="store array 's1_names'"):
        PackedDataset(tmp_path / "store", "train")


def test_s1_names_leave_the_main_table_as_it_was(train_test_sources, tmp_path):
    """The main table's checksum and bytes per sample do not count the S1 names."""
    import hashlib

    index = pack(train_test_sources("v1"), tmp_path / "store", workers=0, progress=False)
    arrays = index["arrays"]
    assert set(arrays) == {"s2_g0", "s2_g1", "s2_g2", "s1", "labels", "names", "split"}
    total = hashlib.sha256("".join(arrays[k]["sha256"] for k in sorted(arrays)).encode()).hexdigest()
    assert index["checksum"] == total
    data = sum(int(np.prod(a["shape"])) * np.dtype(a["dtype"]).itemsize for a in arrays.values())
    assert index["bytes_per_sample"] == data / index["num_samples"]
