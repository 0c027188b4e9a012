"""A damaged packed store (issue 13 item 6): opening names the bad file, ``fusmae-fast verify`` finds
every changed byte, stores written before sizes/checksums were recorded still open.

Each fault is made on a copy of one small store and reproduced through the public API and CLI
(``runs.in_process``: exit code, the file named, no traceback).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from runs import in_process  # tests/faults is on sys.path under pytest

from fusmae_fast.data import DatasetError, MissingDataError, PackedDataset, builtin_sample, open_dataset


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return in_process(args)


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builtin_sample(cache=tmp_path_factory.mktemp("cache"), n_train=4, n_val=1, n_test=1, workers=0)


@pytest.fixture
def copy(store: Path, tmp_path: Path) -> Path:
    out = tmp_path / "store"
    shutil.copytree(store, out)
    return out


def _flip_byte(path: Path, offset_from_end: int) -> None:
    with open(path, "r+b") as f:
        f.seek(-offset_from_end, os.SEEK_END)
        byte = f.read(1)
        f.seek(-offset_from_end, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))


def _edit_index(root: Path, drop: tuple[str, ...]) -> None:
    """Rewrite the index as an older convert wrote it: without the array fields ``drop``."""
    index = json.loads((root / "index.json").read_text())
    for spec in index["arrays"].values():
        for key in drop:
            spec.pop(key, None)
    index.pop("skipped_patches", None)
    (root / "index.json").write_text(json.dumps(index))


def test_index_records_sizes_and_an_intact_store_verifies(store: Path) -> None:
    index = json.loads((store / "index.json").read_text())
    for spec in index["arrays"].values():
        assert spec["bytes"] == (store / spec["file"]).stat().st_size and len(spec["sha256"]) == 64
    proc = cli("verify", str(store))
    assert proc.returncode == 0, proc.stderr
    assert "files match the checksums in its index" in proc.stdout
    PackedDataset(store, "train", verify=True)


def test_truncated_array_is_named_on_open(copy: Path, tmp_path: Path) -> None:
    path = copy / "s1.npy"
    os.truncate(path, path.stat().st_size - 1000)
    with pytest.raises(DatasetError, match="truncated") as info:
        open_dataset(copy, "train")
    assert str(path) in str(info.value)

    proc = cli("verify", str(copy))
    assert proc.returncode == 1 and str(path) in proc.stderr and "truncated" in proc.stderr
    no_traceback(proc)
    # what a user runs: pretraining on the store stops with one line naming the file
    proc = cli("pretrain", "--data", str(copy), "--output_dir", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    no_traceback(proc)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(path) in errors[0], proc.stderr


def test_flipped_bytes_are_found_by_verify(copy: Path, store: Path) -> None:
    _flip_byte(copy / "s2_g1.npy", 100)
    _flip_byte(copy / "labels.npy", 3)
    ds = open_dataset(copy, "test")  # opening stays cheap: sizes only
    assert len(ds) == 1
    proc = cli("verify", str(copy))
    assert proc.returncode == 1
    no_traceback(proc)
    bad = [line for line in proc.stderr.splitlines() if line.startswith("BAD")]
    assert (
        len(bad) == 2 and "s2_g1.npy" in bad[0] and "labels.npy" in bad[1] and "checksum mismatch" in bad[0]
    )
    assert "s2_g0.npy" in proc.stdout and re.search(r"2 of \d+ file\(s\)", proc.stderr)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        PackedDataset(copy, "train", verify=True)
    # nothing valid is lost: the undamaged arrays still read as in the intact store
    assert torch.equal(PackedDataset(copy, "train")[0]["s1"], PackedDataset(store, "train")[0]["s1"])


def test_damaged_header_and_missing_array_are_named(copy: Path) -> None:
    header = copy / "s2_g0.npy"
    data = bytearray(header.read_bytes())
    data[12:20] = b"garbage!"  # inside the header's dict literal
    header.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="s2_g0.npy: store array 's2_g0'"):
        open_dataset(copy, "train")
    (copy / "split.npy").unlink()
    proc = cli("verify", str(copy))
    assert proc.returncode == 1 and "s2_g0.npy" in proc.stderr and "split.npy: missing" in proc.stderr
    no_traceback(proc)
    header.unlink()
    with pytest.raises(MissingDataError, match="s2_g0.npy: store array 's2_g0' missing"):
        open_dataset(copy, "train")


def test_store_written_before_sizes_still_opens_and_verifies(copy: Path, store: Path) -> None:
    _edit_index(copy, drop=("bytes",))
    ds = open_dataset(copy, "train")
    assert ds.names == open_dataset(store, "train").names
    assert cli("verify", str(copy)).returncode == 0
    path = copy / "s2_g2.npy"
    os.truncate(path, path.stat().st_size - 8)  # the size its .npy header implies is checked
    with pytest.raises(DatasetError, match="its header implies"):
        open_dataset(copy, "train")


def test_store_without_checksums_opens_and_verify_says_so(copy: Path) -> None:
    _edit_index(copy, drop=("bytes", "sha256"))
    assert len(open_dataset(copy, "train")) == 4
    proc = cli("verify", str(copy))
    assert proc.returncode == 3, proc.stderr
    no_traceback(proc)
    assert "no checksums" in proc.stderr and "contents not verified" in proc.stderr
    with pytest.raises(DatasetError, match="records no checksum"):
        PackedDataset(copy, "train", verify=True)


def test_verify_of_something_that_is_not_a_store(tmp_path: Path) -> None:
    proc = cli("verify", str(tmp_path))
    assert proc.returncode == 2 and "not a packed store" in proc.stderr
    no_traceback(proc)
    assert list(tmp_path.iterdir()) == []
