"""Built-in sample: generated once (locked, atomic), deterministic, realistic statistics, learnable labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fusmae_fast.data import builtin_sample, open_dataset
from fusmae_fast.data.bands import BEN_S2_GROUPS, S1_MEAN, S1_STD, S2_BANDS, S2_MEAN, S2_STD
from fusmae_fast.data.synthetic import _ben_patch_plan, _BenPatch, _render_ben

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
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "shared")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    assert sum(err.count("generating the built-in") for _, err in outs) == 1
    other = builtin_sample(cache=tmp_path / "other", n_train=8, n_val=2, n_test=2)
    checksum = [json.loads((Path(o.strip()) / "index.json").read_text())["checksum"] for o, _ in outs]
    assert checksum[0] == json.loads((other / "index.json").read_text())["checksum"], "deterministic bytes"


def test_synthetic_statistics_are_near_the_real_ones() -> None:
    plan = _ben_patch_plan(240, 0, 0, 0, 0)
    rendered = [_render_ben(p, 0) for p in plan]
    for g, (names, _) in enumerate(BEN_S2_GROUPS):
        x = np.stack([r[0][g] for r in rendered]).astype(np.float64)
        for j, b in enumerate(names):
            k = S2_BANDS.index(b)
            assert x[:, j].mean() == pytest.approx(S2_MEAN[k], rel=0.2), b
            assert x[:, j].std() == pytest.approx(S2_STD[k], rel=0.3), b
            assert x[:, j].min() >= 0
    s1 = np.stack([r[1] for r in rendered]).astype(np.float64)
    for j in range(2):
        assert abs(s1[:, j].mean() - S1_MEAN[j]) < 1.0
        assert s1[:, j].std() == pytest.approx(S1_STD[j], rel=0.2)


def test_content_depends_on_the_labels() -> None:
    """Single-class patches: nearest class centroid of per-patch band means beats chance by far."""
    feats: dict[str, list[list[np.ndarray]]] = {"s2": [], "s1": []}
    for c in range(19):
        rows = [_render_ben(_BenPatch(1000 + 10 * c + i, "train", ("A", "", "", "", "", 0), 0, 0, [], [c]), 7)
                for i in range(6)]  # fmt: skip
        feats["s2"].append(
            [np.concatenate([np.log(g.reshape(g.shape[0], -1).mean(1)) for g in r[0]]) for r in rows]
        )
        feats["s1"].append([r[1].reshape(2, -1).mean(1) for r in rows])
    for mod, chance_factor in (("s2", 12), ("s1", 3)):
        x = np.array(feats[mod])  # (19 classes, 6 patches, features)
        centroids = x[:, :3].mean(1)
        test = x[:, 3:].reshape(-1, x.shape[-1])
        truth = np.repeat(np.arange(19), 3)
        pred = np.argmin(((test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
        assert (pred == truth).mean() > chance_factor / 19, mod
