"""The packed store: convert -> read equals direct read; index, checksums, workers; resumable convert."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fusmae_fast.cli import main as cli_main
from fusmae_fast.data import SEN12MS, BigEarthNetV1, BigEarthNetV2, DatasetError, PackedDataset, open_dataset
from fusmae_fast.data.bands import S1_BANDS, S2_BANDS
from fusmae_fast.data.packing import pack
from fusmae_fast.data.synthetic import write_bigearthnet_v1

SPLITS = (("train", "train"), ("validation", "val"), ("test", "test"))


def _v1_sources(root: Path, **kw) -> list:
    s2, s1 = root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0"
    return [(split, BigEarthNetV1(s2, s1, root / "splits" / f"{short}.csv", **kw)) for split, short in SPLITS]


def _assert_same_items(a, b) -> None:
    assert len(a) == len(b) and a.names == b.names
    np.testing.assert_array_equal(a.labels, b.labels)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x["name"] == y["name"]
        for k in ("s1", "s2", "label"):
            assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), (i, k)


def _store_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def v1_store(v1_root, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = v1_root
    out = tmp_path_factory.mktemp("store") / "v1"
    pack(_v1_sources(root), out, chunk_size=3, workers=2, progress=False)
    return out


def test_convert_then_read_equals_direct_read(v1_root, v1_store: Path) -> None:
    root, _ = v1_root
    for split, reader in _v1_sources(root):
        _assert_same_items(PackedDataset(v1_store, split), reader)
    raw = _v1_sources(root, normalize=False)[0][1]
    _assert_same_items(PackedDataset(v1_store, "train", normalize=False), raw)
    small = BigEarthNetV1(
        root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0", root / "splits/test.csv", image_size=64
    )
    _assert_same_items(PackedDataset(v1_store, "test", image_size=64), small)


def test_index_shapes_statistics_and_checksum(v1_root, v1_store: Path) -> None:
    root, m = v1_root
    ds = PackedDataset(v1_store, "all")
    idx = ds.index
    assert idx["num_samples"] == 12 and idx["splits"] == {"train": 8, "validation": 2, "test": 2}
    assert idx["skipped"] == {"no_19_class_label": 2, "excluded": 0} or idx["skipped"] == {
        "no_19_class_label": 2
    }
    arrays = idx["arrays"]
    assert arrays["s2_g0"]["shape"] == [12, 4, 120, 120] and arrays["s2_g0"]["dtype"] == "uint16"
    assert arrays["s2_g1"]["shape"] == [12, 6, 60, 60] and arrays["s2_g2"]["shape"] == [12, 2, 20, 20]
    assert arrays["s1"]["shape"] == [12, 2, 120, 120] and arrays["s1"]["dtype"] == "float32"
    assert arrays["labels"]["shape"] == [12, 19]
    width = int(np.load(v1_store / "names.npy").dtype.itemsize)
    expected = 2 * (4 * 120 * 120 + 6 * 60 * 60 + 2 * 20 * 20) + 4 * 2 * 120 * 120 + 19 + width + 1
    assert idx["bytes_per_sample"] == expected
    written = [m.arrays[n] for n in ds.names]
    for g, names in enumerate(
        [("B02", "B03", "B04", "B08"), ("B05", "B06", "B07", "B8A", "B11", "B12"), ("B01", "B09")]
    ):
        stack = np.stack([w["s2"][g] for w in written]).astype(np.float64)
        for j, b in enumerate(names):
            assert idx["statistics"]["s2"][b]["mean"] == pytest.approx(stack[:, j].mean(), rel=1e-9)
            assert idx["statistics"]["s2"][b]["std"] == pytest.approx(stack[:, j].std(), rel=1e-6)
    s1 = np.stack([w["s1"] for w in written]).astype(np.float64)
    for j, b in enumerate(S1_BANDS):
        assert idx["statistics"]["s1"][b]["mean"] == pytest.approx(s1[:, j].mean(), rel=1e-9)
    assert set(idx["statistics"]["s2"]) == set(S2_BANDS)
    assert idx["statistics"]["label_counts"]["train"] == ds.labels[:8].sum(0).astype(int).tolist()
    assert idx["source"]["sources"][0]["format"] == "bigearthnet-v1"
    PackedDataset(v1_store, "test", verify=True)


def test_verify_detects_corruption(v1_store: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(v1_store, copy)
    with open(copy / "s2_g1.npy", "r+b") as f:
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        PackedDataset(copy, "train", verify=True)


def test_workers_share_the_mapping(v1_store: Path) -> None:
    ds = PackedDataset(v1_store, "train")
    ds[0]  # maps the arrays in this process
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000, "the memory maps must not be pickled"
    assert pickle.loads(blob)._arrays is None
    direct = [ds[i] for i in range(len(ds))]
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    s2 = torch.cat([b["s2"] for b in batches])
    assert torch.equal(s2, torch.stack([d["s2"] for d in direct]))
    assert sum((b["name"] for b in batches), []) == ds.names


def test_float16_s1(v1_root, tmp_path: Path) -> None:
    root, _ = v1_root
    pack(_v1_sources(root)[1:2], tmp_path / "f16", s1_dtype="float16", workers=0, progress=False)
    packed = PackedDataset(tmp_path / "f16", "validation", normalize=False)
    direct = _v1_sources(root, normalize=False)[1][1]
    assert packed.index["arrays"]["s1"]["dtype"] == "float16"
    for i in range(len(direct)):
        assert torch.equal(packed[i]["s2"], direct[i]["s2"])
        torch.testing.assert_close(packed[i]["s1"], direct[i]["s1"], atol=0.02, rtol=0)


def test_v2_and_sen12ms_convert_equal_direct(v2_root, sen_root, tmp_path: Path) -> None:
    v2_opts = ["--out", str(tmp_path / "v2"), "--workers", "0", "--no-progress"]
    assert cli_main(["convert", "bigearthnet-v2", str(v2_root[0]), *v2_opts]) == 0
    _assert_same_items(open_dataset(tmp_path / "v2", "val"), BigEarthNetV2(v2_root[0], "validation"))
    sen_opts = ["--out", str(tmp_path / "sen"), "--workers", "2", "--chunk-size", "4", "--no-progress"]
    assert cli_main(["convert", "sen12ms", str(sen_root[0]), *sen_opts]) == 0
    packed = open_dataset(tmp_path / "sen", "train")
    assert packed.index["kind"] == "sen12ms" and packed.num_classes == 10 and packed.labels.dtype == np.int64
    _assert_same_items(packed, SEN12MS(sen_root[0], split="train"))
    assert packed.index["skipped"] == {"no_valid_igbp": 1}


class _Stop(Exception):
    pass


def _pack_stopped(root: Path, out: Path, after: int) -> None:
    """A convert into ``out`` stopped (an exception) once ``after`` chunks are recorded."""
    seen: list[int] = []

    def stop(done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == after:
            raise _Stop

    with pytest.raises(_Stop):
        pack(_v1_sources(root), out, chunk_size=3, workers=2, progress=False, on_chunk=stop)


def _pack_counting(root: Path, out: Path) -> int:
    """Run (or resume) the convert into ``out`` to its end; returns the number of chunks it packed."""
    done: list[int] = []
    pack(
        _v1_sources(root), out, chunk_size=3, workers=2, progress=False, on_chunk=lambda d, t: done.append(d)
    )
    return len(done)


def test_interrupted_convert_resumes_to_an_identical_store(v1_root, v1_store: Path, tmp_path: Path) -> None:
    root, _ = v1_root
    out = tmp_path / "resumed"
    _pack_stopped(root, out, after=2)
    assert not (out / "index.json").exists() and len(list((out / ".convert" / "chunks").iterdir())) >= 2
    with pytest.raises(DatasetError, match="unfinished convert"):
        open_dataset(out, "train")
    with pytest.raises(FileExistsError, match="unfinished convert of other data or options"):
        pack(_v1_sources(root), out, chunk_size=3, s1_dtype="float16", workers=0, progress=False)
    assert _pack_counting(root, out) == 4 - 2  # only the chunks not recorded were redone
    assert _store_bytes(out) == _store_bytes(v1_store)
    assert not (out / ".convert").exists()


def test_convert_with_a_damaged_array_header_starts_afresh(v1_root, v1_store: Path, tmp_path: Path) -> None:
    root, _ = v1_root
    out = tmp_path / "damaged"
    _pack_stopped(root, out, after=1)
    header = out / "s2_g0.npy"
    data = bytearray(header.read_bytes())
    data[12:20] = b"garbage!"  # inside the header's dict literal (Python 3.12: a tokenize.TokenError)
    header.write_bytes(bytes(data))
    assert _pack_counting(root, out) == 4  # nothing recorded was trusted
    assert _store_bytes(out) == _store_bytes(v1_store)


def test_killed_convert_resumes_to_an_identical_store(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write_bigearthnet_v1(root, 36, seed=21)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    args = ["convert", "bigearthnet-v1", str(root), "--chunk-size", "1", "--no-progress"]
    assert cli_main([*args, "--out", str(clean), "--workers", "0"]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "fusmae_fast.cli", *args, "--out", str(killed), "--workers", "1"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    chunks = killed / ".convert" / "chunks"
    deadline = time.monotonic() + 120
    while (
        not (chunks.is_dir() and any(chunks.iterdir()))
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "index.json").exists(), "the convert finished before it could be killed"
    done = len(list(chunks.iterdir()))
    assert 1 <= done < 36, done
    assert cli_main([*args, "--out", str(killed), "--workers", "2"]) == 0
    assert _store_bytes(killed) == _store_bytes(clean)
