"""Synthetic BigEarthNet v2.0 (reBEN): the tile/product folders, band files and ``metadata.parquet``.

Layout (docs/design.md §5): ``BigEarthNet-S2/<tile>/<patch_id>/`` with one GeoTIFF per band at its
native resolution, ``BigEarthNet-S1/<product>/<s1_name>/`` with ``_VV.tif`` and ``_VH.tif``, and
``metadata.parquet`` with one row per patch (19-class label names, split, snow and cloud flags).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fusmae_fast.data.bigearthnet import v2_s1_folder, v2_s2_folder
from fusmae_fast.data.labels import BEN19_NAMES
from fusmae_fast.data.synthetic.bigearthnet import (
    BenPatch,
    ben_manifest,
    ben_params,
    ben_patch_plan,
    render_ben,
    v1_names,
    v2_names,
    write_s1_bands,
    write_s2_bands,
)
from fusmae_fast.data.synthetic.runner import Manifest, run_patches


def _write_v2_patch(root: Path, p: BenPatch, seed: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The S2 and S1 folders of one patch; returns the (S2 groups, S1) written."""
    groups, s1 = render_ben(p, seed)
    s2_name, s1_name = v2_names(p)
    d2 = v2_s2_folder(root / "BigEarthNet-S2", s2_name)
    d2.mkdir(parents=True, exist_ok=True)
    write_s2_bands(d2, s2_name, groups, p)
    d1 = v2_s1_folder(root / "BigEarthNet-S1", s1_name)
    d1.mkdir(parents=True, exist_ok=True)
    write_s1_bands(d1, s1_name, s1, p)
    return groups, s1


def write_bigearthnet_v2(
    root: str | os.PathLike[str],
    n: int = 384,
    *,
    counts: tuple[int, int, int] | None = None,
    seed: int = 0,
    n_unlabelled: int = 0,
    n_snow: int = 0,
    n_cloud: int = 0,
    workers: int = 1,
    progress: bool = False,
    return_arrays: bool = False,
) -> Manifest:
    """Write ``n`` labelled patches (+ extras) in BigEarthNet v2.0 (reBEN) layout under ``root``.

    ``BigEarthNet-S2/<tile>/<patch_id>/``, ``BigEarthNet-S1/<product>/<s1_name>/`` and
    ``metadata.parquet`` (patch_id, labels as 19-class names, split, country, s1_name, s2v1_name,
    contains_seasonal_snow, contains_cloud_or_shadow). Snow/cloud extras are flagged (split 'train');
    unlabelled extras have an empty label list (split 'train').
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    plan = ben_patch_plan(n, seed, n_unlabelled, n_snow, n_cloud, counts)
    arrays = run_patches(_write_v2_patch, root, plan, seed, workers, progress, calibrate=ben_params)
    names = [v2_names(p) for p in plan]
    countries = ("Austria", "Portugal", "Finland", "Serbia", "Switzerland")
    table = pa.table(
        {
            "patch_id": [s2 for s2, _ in names],
            "labels": pa.array(
                [[BEN19_NAMES[c] for c in p.classes] for p in plan], type=pa.list_(pa.string())
            ),
            "split": [p.role if p.role in ("train", "validation", "test") else "train" for p in plan],
            "country": [countries[p.index % len(countries)] for p in plan],
            "s1_name": [s1 for _, s1 in names],
            "s2v1_name": [v1_names(p)[0] for p in plan],
            "contains_seasonal_snow": [p.role == "snow" for p in plan],
            "contains_cloud_or_shadow": [p.role == "cloud" for p in plan],
        }
    )
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "metadata.parquet")
    return ben_manifest("bigearthnet-v2", root, plan, names, arrays if return_arrays else None)
