"""Synthetic BigEarthNet v1.0: the folders, band files, metadata JSONs and split files of the archive.

Layout (docs/design.md §5): ``BigEarthNet-v1.0/<S2 name>/`` with one GeoTIFF per band at its native
resolution and ``<S2 name>_labels_metadata.json`` (CORINE-43 ``labels``, coordinates, projection,
tile source, acquisition date); ``BigEarthNet-S1-v1.0/<S1 name>/`` with ``_VV.tif``, ``_VH.tif`` and
a JSON carrying ``corresponding_s2_patch``; ``splits/{train,val,test}.csv``; the snow and cloud
lists. Part of the S2 names have a one-digit hour, as in the real archive.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from fusmae_fast.data.synthetic.bigearthnet import (
    BenPatch,
    ben_manifest,
    ben_params,
    ben_patch_plan,
    patch_geo,
    render_ben,
    v1_names,
    write_s1_bands,
    write_s2_bands,
)
from fusmae_fast.data.synthetic.runner import Manifest, run_patches


def _dump_json(path: Path, obj: dict[str, Any]) -> None:
    """A metadata JSON, as compact as the archive's."""
    path.write_text(json.dumps(obj))


def _write_v1_patch(root: Path, p: BenPatch, seed: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The S2 and S1 folders of one patch; returns the (S2 groups, S1) written."""
    groups, s1 = render_ben(p, seed)
    s2_name, s1_name = v1_names(p)
    epsg, ulx, uly = patch_geo(p)
    coords2 = {"ulx": ulx, "uly": uly, "lrx": ulx + 1200.0, "lry": uly - 1200.0}
    sat, date, t2, t1, tile, orbit = p.acq
    d2 = root / "BigEarthNet-v1.0" / s2_name
    d2.mkdir(parents=True, exist_ok=True)
    write_s2_bands(d2, s2_name, groups, p)
    hh2 = t2.zfill(6)
    _dump_json(
        d2 / f"{s2_name}_labels_metadata.json",
        {
            "labels": p.clc,
            "coordinates": coords2,
            "projection": f"EPSG:{epsg}",
            "tile_source": f"S2{sat}_MSIL1C_{date}T{hh2}_N0205_R{orbit:03d}_T{tile}_{date}T{hh2}",
            "acquisition_date": f"{date[:4]}-{date[4:6]}-{date[6:]} {hh2[:2]}:{hh2[2:4]}:{hh2[4:]}",
        },
    )
    d1 = root / "BigEarthNet-S1-v1.0" / s1_name
    d1.mkdir(parents=True, exist_ok=True)
    write_s1_bands(d1, s1_name, s1, p)
    _dump_json(
        d1 / f"{s1_name}_labels_metadata.json",
        {
            "labels": p.clc,
            "coordinates": {"ulx": ulx, "uly": uly, "lrx": ulx + 1200.0, "lly": uly - 1200.0},
            "projection": f"EPSG:{epsg}",
            "corresponding_s2_patch": s2_name,
            "scene_source": f"S1{sat}_IW_GRDH_1SDV_{date}T{t1}_{date}T{t1}_017017_01C6B8_C1A3",
            "acquisition_time": f"{date[:4]}-{date[4:6]}-{date[6:]} {t1[:2]}:{t1[2:4]}:{t1[4:]}",
        },
    )
    return groups, s1


def write_bigearthnet_v1(
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
    """Write ``n`` labelled patches (+ extras) in BigEarthNet v1.0 layout under ``root``.

    Split sizes: ``counts`` (train, validation, test) if given (``n`` is then ignored), else 4 : 1 : 1.

    ``root/BigEarthNet-v1.0``, ``root/BigEarthNet-S1-v1.0``, ``root/splits/{train,val,test}.csv``
    (``S2name,S1name`` lines, 4 : 1 : 1; no file for an empty split), and
    ``root/patches_with_seasonal_snow.csv`` / ``patches_with_cloud_and_shadow.csv`` listing the
    ``n_snow`` / ``n_cloud`` extra patches (written, but in no split). ``n_unlabelled`` extra patches
    carry only CORINE names without a 19-class counterpart and are listed in the train CSV (readers
    skip them with a count).
    """
    root = Path(root)
    plan = ben_patch_plan(n, seed, n_unlabelled, n_snow, n_cloud, counts)
    arrays = run_patches(_write_v1_patch, root, plan, seed, workers, progress, calibrate=ben_params)
    names = [v1_names(p) for p in plan]
    splits_dir = root / "splits"
    splits_dir.mkdir(parents=True, exist_ok=True)
    for split, short in (("train", "train"), ("validation", "val"), ("test", "test")):
        lines = [
            f"{s2},{s1}"
            for p, (s2, s1) in zip(plan, names, strict=True)
            if p.role == split or (split == "train" and p.role == "unlabelled")
        ]
        if lines:  # an empty split gets no file (readers reject a split file that lists nothing)
            (splits_dir / f"{short}.csv").write_text("".join(line + "\n" for line in lines))
    for role, fname in (
        ("snow", "patches_with_seasonal_snow.csv"),
        ("cloud", "patches_with_cloud_and_shadow.csv"),
    ):
        (root / fname).write_text(
            "".join(s2 + "\n" for p, (s2, _) in zip(plan, names, strict=True) if p.role == role)
        )
    return ben_manifest("bigearthnet-v1", root, plan, names, arrays if return_arrays else None)
