"""Built-in sample: generated once (locked, atomic), deterministic (its content: test_synthetic.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fusmae_fast.data import builtin_sample, open_dataset

SIZES = {"n_train": 12, "n_val": 3, "n_test": 3}


def test_builtin_sample_splits_items_and_reuse(tmp_path: Path) -> None:
    train = open_dataset(None, "train", cache=tmp_path, **SIZES)
    assert len(train) == 12 and train.num_classes == 19
    assert train.labels.shape == (12, 19) and train.labels.dtype == np.float32 and len(train.names) == 12
    item = train[0]
    assert item["s2"].shape == (12, 120, 120) and item["s2"].dtype == torch.float32
    assert item["s1"].shape == (2, 120, 120) and item["s1"].dtype == torch.float32
    assert item["label"].shape == (19,) and item["name"] == train.names[0]
    assert len(open_dataset("sample", "val", cache=tmp_path, **SIZES)) == 3
    assert len(open_dataset(None, "validation", cache=tmp_path, **SIZES)) == 3
    assert len(open_dataset(None, "test", cache=tmp_path, **SIZES)) == 3
    store = builtin_sample(cache=tmp_path, **SIZES)
    stamp = (store / "index.json").stat().st_mtime_ns
    builtin_sample(cache=tmp_path, **SIZES)
    assert (store / "index.json").stat().st_mtime_ns == stamp, "generated only once"
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [store.name]


def test_builtin_sen12ms_sample(tmp_path: Path) -> None:
    ds = open_dataset("sample:sen12ms", "train", cache=tmp_path, n_train=6, n_val=2, n_test=2)
    assert len(ds) == 6 and ds.num_classes == 10 and ds.labels.dtype == np.int64 and ds.labels.shape == (6,)
    item = ds[0]
    assert item["s2"].shape == (12, 120, 120) and item["s1"].shape == (2, 120, 120)
    assert item["label"].dtype == torch.int64 and item["label"].shape == () and 0 <= int(item["label"]) < 10
    with pytest.raises(ValueError, match="sample:mars"):
        open_dataset("sample:mars", "train")


def test_concurrent_processes_generate_once_and_agree(tmp_path: Path) -> None:
    code = (
        "import sys; from fusmae_fast.data import builtin_sample; "
        "print(builtin_sample(cache=sys.argv[1], n_train=8, n_val=2, n_test=2, workers=0))"
    )
    cmd = [sys.executable, "-c", code, str(tmp_path / "shared")]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    assert sum(err.count("generating the built-in") for _, err in outs) == 1
    other = builtin_sample(cache=tmp_path / "other", n_train=8, n_val=2, n_test=2)
    checksum = [json.loads((Path(o.strip()) / "index.json").read_text())["checksum"] for o, _ in outs]
    assert checksum[0] == json.loads((other / "index.json").read_text())["checksum"], "deterministic bytes"
