"""The synthetic content model: realistic per-band statistics, images that depend on the labels."""

from __future__ import annotations

import numpy as np
import pytest

from fusmae_fast.data.bands import BEN_S2_GROUPS, S1_MEAN, S1_STD, S2_BANDS, S2_MEAN, S2_STD
from fusmae_fast.data.synthetic.bigearthnet import BenPatch, ben_patch_plan, render_ben


def test_synthetic_statistics_are_near_the_real_ones() -> None:
    plan = ben_patch_plan(240, 0, 0, 0, 0)
    rendered = [render_ben(p, 0) for p in plan]
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
    acq = ("A", "", "", "", "", 0)
    for c in range(19):
        patches = [BenPatch(1000 + 10 * c + i, "train", acq, 0, 0, [], [c]) for i in range(6)]
        rows = [render_ben(p, 7) for p in patches]
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
