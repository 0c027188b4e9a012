"""Small synthetic datasets in the real layouts, written once per test session, and their readers; the IGBP
table."""

from __future__ import annotations

import pytest

from fusmae_fast.data import SEN12MS, BigEarthNetV1, BigEarthNetV2
from fusmae_fast.data.synthetic import write_bigearthnet_v1, write_bigearthnet_v2, write_sen12ms


@pytest.fixture(scope="session")
def v1_root(tmp_path_factory: pytest.TempPathFactory):
    """BigEarthNet v1: 12 labelled (8/2/2), 2 unlabelled (in train.csv), 1 snow, 1 cloud."""
    root = tmp_path_factory.mktemp("ben_v1")
    manifest = write_bigearthnet_v1(root, 12, seed=3, n_unlabelled=2, n_snow=1, n_cloud=1, return_arrays=True)
    return root, manifest


@pytest.fixture(scope="session")
def v2_root(tmp_path_factory: pytest.TempPathFactory):
    """BigEarthNet v2 (reBEN): 12 labelled (8/2/2), 1 unlabelled, 1 snow, 1 cloud."""
    root = tmp_path_factory.mktemp("ben_v2")
    manifest = write_bigearthnet_v2(root, 12, seed=4, n_unlabelled=1, n_snow=1, n_cloud=1, return_arrays=True)
    return root, manifest


@pytest.fixture(scope="session")
def sen_root(tmp_path_factory: pytest.TempPathFactory):
    """SEN12MS: 12 labelled (8/2/2) + 1 with no valid IGBP pixel."""
    root = tmp_path_factory.mktemp("sen12ms")
    manifest = write_sen12ms(root, 12, seed=5, n_unlabelled=1, return_arrays=True)
    return root, manifest


@pytest.fixture(scope="session")
def train_test_sources(v1_root, v2_root, sen_root):
    """``sources(kind)``: the (split, reader) pairs of the train and test splits of the synthetic
    ``v1``, ``v2`` or ``sen12ms`` root, as ``pack`` takes them."""

    def sources(kind: str):
        if kind == "v1":
            root = v1_root[0]
            s2, s1 = root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0"
            return [(s, BigEarthNetV1(s2, s1, root / "splits" / f"{s}.csv")) for s in ("train", "test")]
        if kind == "v2":
            return [(s, BigEarthNetV2(v2_root[0], s)) for s in ("train", "test")]
        return [(s, SEN12MS(sen_root[0], split=s)) for s in ("train", "test")]

    return sources


@pytest.fixture(scope="session")
def igbp_to_simplified() -> dict[int, int]:
    """IGBP code (1..17) -> simplified IGBP class id (0..9), typed here independently of the code."""
    return {
        1: 0,
        2: 0,
        3: 0,
        4: 0,
        5: 0,
        6: 1,
        7: 1,
        8: 2,
        9: 2,
        10: 3,
        11: 4,
        12: 5,
        14: 5,
        13: 6,
        15: 7,
        16: 8,
        17: 9,
    }
