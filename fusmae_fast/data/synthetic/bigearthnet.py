"""BigEarthNet patches for both writers (v1.0 and v2.0): the plan, the rendering, names and band files.

A plan holds one :class:`BenPatch` per patch: its role (split or extra), an acquisition (satellite,
date, times, UTM tile, orbit) and grid position that make its names, its CORINE-43 label names
(a 19-class patch may carry a dropped CORINE name too; an unlabelled one only dropped names) and its
19-class ids. :func:`render_ben` draws its images from the content model, as stored: S2 uint16 at
each band group's native resolution (coarse bands block means of the 10 m rendering), S1 float32 dB.
Everything is a function of (seed, patch index): same arguments, same bytes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusmae_fast.data.bands import BEN_IMAGE_SIZE, BEN_S2_GROUPS, S1_BANDS, S2_BANDS, S2_MEAN, S2_STD
from fusmae_fast.data.geotiff import write_geotiff
from fusmae_fast.data.labels import BEN19_NAMES, CLC43_TO_BEN19
from fusmae_fast.data.synthetic.content import ContentModel, block_mean, s1_db, s2_reflectance, to_uint16
from fusmae_fast.data.synthetic.runner import Manifest, plan_counts

# Rough class frequencies (BigEarthNet-19 is dominated by arable land, forests and pastures).
BEN19_WEIGHTS = np.array(
    [6, 2, 20, 3, 10, 8, 9, 1, 10, 14, 12, 1.5, 2, 10, 0.5, 2, 0.5, 3, 4], dtype=np.float64
)
_DROPPED_CLC = tuple(n for n, i in CLC43_TO_BEN19.items() if i is None)
_CLC_OF_BEN19: tuple[tuple[str, ...], ...] = tuple(
    tuple(n for n, i in CLC43_TO_BEN19.items() if i == c) for c in range(len(BEN19_NAMES))
)

_BEN_FACTORS = tuple(
    next(BEN_IMAGE_SIZE // size for names, size in BEN_S2_GROUPS if b in names) for b in S2_BANDS
)

# Acquisitions the names are drawn from: (satellite, date, S2 time, S1 time, UTM tile, orbit).
# Two of them have a 09:xx sensing time, written with a one-digit hour as in the real archive.
_ACQUISITIONS = (
    ("A", "20170613", "101031", "165043", "33UUP", 22),
    ("B", "20170717", "93020", "054722", "29SND", 37),
    ("A", "20171002", "112121", "173012", "35VNL", 80),
    ("B", "20180220", "94029", "061533", "34TDN", 136),
    ("A", "20180510", "104021", "165512", "32TMS", 108),
)


@functools.cache
def ben_model() -> ContentModel:
    """The content model of the 19 BigEarthNet classes (built once per process)."""
    return ContentModel(len(BEN19_NAMES), BEN19_WEIGHTS)


@dataclass
class BenPatch:
    """One planned BigEarthNet patch."""

    index: int
    """Position in the plan (seeds its rendering)."""
    role: str
    """'train' | 'validation' | 'test' | 'unlabelled' | 'snow' | 'cloud'."""
    acq: tuple[str, str, str, str, str, int]
    """(satellite, date, S2 time, S1 time, UTM tile, orbit) of the acquisition."""
    x: int
    """Column of the patch in its tile's grid."""
    y: int
    """Row of the patch in its tile's grid."""
    clc: list[str]
    """CORINE-43 label names, as the v1 metadata JSONs list them."""
    classes: list[int]
    """19-class ids (empty for an unlabelled patch)."""


def ben_patch_plan(
    n: int,
    seed: int,
    n_unlabelled: int,
    n_snow: int,
    n_cloud: int,
    counts: tuple[int, int, int] | None = None,
) -> list[BenPatch]:
    """The plan of a BigEarthNet sample: ``counts`` (or 4 : 1 : 1 of ``n``) labelled patches, then the
    unlabelled, snow and cloud extras."""
    counts = plan_counts(n, counts)
    roles = ["train"] * counts[0] + ["validation"] * counts[1] + ["test"] * counts[2]
    roles += ["unlabelled"] * n_unlabelled + ["snow"] * n_snow + ["cloud"] * n_cloud
    rng = np.random.default_rng([seed, 7])
    plan, used = [], set()
    for i, role in enumerate(roles):
        acq = _ACQUISITIONS[i % len(_ACQUISITIONS)]
        while True:
            x, y = int(rng.integers(10, 100)), int(rng.integers(10, 100))
            if (acq, x, y) not in used:
                used.add((acq, x, y))
                break
        if role == "unlabelled":
            classes: list[int] = []
            clc = list(rng.choice(_DROPPED_CLC, size=int(rng.integers(1, 3)), replace=False))
        else:
            classes = _draw_ben19(rng)
            clc = [str(rng.choice(_CLC_OF_BEN19[c])) for c in classes]
            if rng.random() < 0.15:
                clc.append(str(rng.choice(_DROPPED_CLC)))
        plan.append(BenPatch(i, role, acq, x, y, [str(c) for c in clc], classes))
    return plan


def _ben_cells(rng: np.random.Generator, classes: list[int] | None = None) -> list[int]:
    """Voronoi cells of a BigEarthNet patch: each of its classes twice, plus 0-2 more (cycling)."""
    if classes is None:
        classes = _draw_ben19(rng)
    return [classes[i % len(classes)] for i in range(2 * len(classes) + int(rng.integers(0, 3)))]


def _draw_ben19(rng: np.random.Generator) -> list[int]:
    """1-4 distinct classes, drawn with :data:`BEN19_WEIGHTS`."""
    k = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.25, 0.1]))
    p = BEN19_WEIGHTS / BEN19_WEIGHTS.sum()
    return sorted(int(c) for c in rng.choice(len(p), size=k, replace=False, p=p))


def ben_params() -> tuple[np.ndarray, ...]:
    """(mu, sigma, offset, scale) mapping the BigEarthNet model's z-scores to raw units."""
    return ben_model().raw_params(S2_MEAN, S2_STD, _BEN_FACTORS, BEN_IMAGE_SIZE, _ben_cells)


def render_ben(patch: BenPatch, seed: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Raw S2 groups (uint16 at native resolution) and S1 (float32 dB) of a BigEarthNet patch."""
    model = ben_model()
    mu, sigma, offset, scale = ben_params()
    rng = np.random.default_rng([seed, patch.index, 1])
    classes = patch.classes or [int(rng.integers(0, model.num_classes))]  # unlabelled: some land cover
    cells = _ben_cells(rng, classes)
    z2, z1, _ = model.render(cells, rng, BEN_IMAGE_SIZE)
    groups = []
    for names, size in BEN_S2_GROUPS:
        idx = [S2_BANDS.index(b) for b in names]
        z = block_mean(z2[idx].astype(np.float64), BEN_IMAGE_SIZE // size)
        groups.append(to_uint16(s2_reflectance(z, mu[idx], sigma[idx])))
    return tuple(groups), s1_db(z1, offset, scale)


def v1_names(p: BenPatch) -> tuple[str, str]:
    """(S2 name, S1 name) of a patch in v1.0 (the S2 sensing time as the archive writes it: a 09:xx
    hour has one digit)."""
    sat, date, t2, t1, tile, _ = p.acq
    return f"S2{sat}_MSIL2A_{date}T{t2}_{p.x}_{p.y}", f"S1{sat}_IW_GRDH_1SDV_{date}T{t1}_{tile}_{p.x}_{p.y}"


def v2_names(p: BenPatch) -> tuple[str, str]:
    """(patch_id, s1_name) of a patch in v2.0 (reBEN): the S2 name carries the orbit and tile."""
    sat, date, t2, t1, tile, orbit = p.acq
    return (
        f"S2{sat}_MSIL2A_{date}T{int(t2):06d}_N9999_R{orbit:03d}_T{tile}_{p.x}_{p.y}",
        f"S1{sat}_IW_GRDH_1SDV_{date}T{t1}_{tile}_{p.x}_{p.y}",
    )


def patch_geo(p: BenPatch) -> tuple[int, float, float]:
    """EPSG code and upper-left corner of a patch (1200 m patches on a per-tile grid)."""
    tile = p.acq[4]
    epsg = 32600 + int(tile[:2])
    return epsg, 300000.0 + 1200.0 * p.x, 5200000.0 - 1200.0 * p.y


def write_s2_bands(folder: Path, stem: str, groups: tuple[np.ndarray, ...], p: BenPatch) -> None:
    """One single-band GeoTIFF ``<stem>_<band>.tif`` per S2 band, at its group's native resolution."""
    epsg, ulx, uly = patch_geo(p)
    for arr, (names, size) in zip(groups, BEN_S2_GROUPS, strict=True):
        res = 1200.0 / size
        for j, b in enumerate(names):
            write_geotiff(folder / f"{stem}_{b}.tif", arr[j], epsg=epsg, origin=(ulx, uly), resolution=res)


def write_s1_bands(folder: Path, stem: str, s1: np.ndarray, p: BenPatch) -> None:
    """``<stem>_VV.tif`` and ``<stem>_VH.tif``: S1 dB at 10 m."""
    epsg, ulx, uly = patch_geo(p)
    for j, pol in enumerate(S1_BANDS):
        write_geotiff(folder / f"{stem}_{pol}.tif", s1[j], epsg=epsg, origin=(ulx, uly), resolution=10.0)


def ben_manifest(
    fmt: str,
    root: Path,
    plan: list[BenPatch],
    names: list[tuple[str, str]],
    arrays: list[tuple[tuple[np.ndarray, ...], np.ndarray]] | None,
) -> Manifest:
    """The manifest of a written BigEarthNet sample; ``names`` are (S2, S1) names, ``arrays`` the
    written (S2 groups, S1) per patch when the caller returns them."""
    m = Manifest(format=fmt, root=str(root), splits={"train": [], "validation": [], "test": []})
    for p, (name, _) in zip(plan, names, strict=True):
        if p.role in m.splits:
            m.splits[p.role].append(name)
        else:
            getattr(m, p.role).append(name)
    if arrays is not None:
        m.arrays = {
            s2: {"s2": g, "s1": s1, "label": p.classes, "s1_name": s1n}
            for p, (s2, s1n), (g, s1) in zip(plan, names, arrays, strict=True)
        }
    return m
