"""Synthetic SEN12MS: season and scene folders of S1, S2 and land-cover GeoTIFFs, and the split lists.

Layout (docs/design.md §5): ``<season>/{s1,s2,lc}_<scene>/<season>_<mod>_<scene>_p<n>.tif``, all
256x256: S1 2 bands float32 dB, S2 13 bands uint16 (L1C, with B10), LC 4 uint16 layers with IGBP
first; ``splits/val_list.txt`` and ``splits/test_list.txt``. Each patch has a dominant simplified
IGBP class (its label) covering most of it; an unlabelled patch has an all-fill IGBP layer.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusmae_fast.data.bands import S2_MEAN, S2_STD, SEN12MS_IMAGE_SIZE
from fusmae_fast.data.geotiff import write_geotiff
from fusmae_fast.data.synthetic.content import ContentModel, s1_db, s2_reflectance, to_uint16
from fusmae_fast.data.synthetic.runner import Manifest, plan_counts, run_patches

# Rough frequencies of the 10 simplified IGBP classes (their ids are the labels).
SIMPLIFIED_WEIGHTS = np.array([15, 10, 20, 15, 2, 15, 8, 1, 4, 10], dtype=np.float64)

# The IGBP codes of each simplified class: a region of class c shows one of them.
SIMPLIFIED_TO_IGBP: tuple[tuple[int, ...], ...] = (
    (1, 2, 3, 4, 5),  # Forest
    (6, 7),  # Shrubland
    (8, 9),  # Savanna
    (10,),  # Grassland
    (11,),  # Wetlands
    (12, 14),  # Croplands
    (13,),  # Urban/Built-up
    (15,),  # Snow/Ice
    (16,),  # Barren
    (17,),  # Water
)

# SEN12MS is L1C with a B10 (cirrus) band, low and dark: rough mean/std for it.
_B10_MEAN, _B10_STD = 20.0, 12.0

_SEASONS = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter")
SEN12MS_PER_SCENE = 8
"""Patches per scene folder."""


@functools.cache
def sen12ms_model() -> ContentModel:
    """The content model of the 10 simplified IGBP classes, 13 S2 bands (built once per process)."""
    return ContentModel(len(SIMPLIFIED_WEIGHTS), SIMPLIFIED_WEIGHTS, s2_bands=13, seed=20190715)


@dataclass
class SenPatch:
    """One planned SEN12MS patch."""

    index: int
    """Position in the plan (seeds its rendering)."""
    role: str
    """'train' | 'validation' | 'test' | 'unlabelled'."""
    season: str
    """Season folder, e.g. 'ROIs1158_spring'."""
    scene: int
    """Scene number within the season."""
    number: int
    """Patch number within the scene (the ``p<n>`` of the file name)."""
    dominant: int
    """Simplified IGBP class id covering most of the patch (its label)."""


def sen_patch_plan(
    n: int, seed: int, n_unlabelled: int, counts: tuple[int, int, int] | None = None
) -> list[SenPatch]:
    """The plan of a SEN12MS sample: ``counts`` (or 4 : 1 : 1 of ``n``) labelled patches, then the
    unlabelled extras, :data:`SEN12MS_PER_SCENE` to a scene folder."""
    counts = plan_counts(n, counts)
    roles = (
        ["train"] * counts[0]
        + ["validation"] * counts[1]
        + ["test"] * counts[2]
        + ["unlabelled"] * n_unlabelled
    )
    rng = np.random.default_rng([seed, 11])
    p = SIMPLIFIED_WEIGHTS / SIMPLIFIED_WEIGHTS.sum()
    plan = []
    for i, role in enumerate(roles):
        scene_index = i // SEN12MS_PER_SCENE
        season = _SEASONS[scene_index % len(_SEASONS)]
        scene = 1 + scene_index // len(_SEASONS) * 7 + scene_index % 5  # sparse, like the real numbering
        plan.append(
            SenPatch(
                i,
                role,
                season,
                scene,
                30 + 3 * (i % SEN12MS_PER_SCENE) + scene_index,
                int(rng.choice(len(p), p=p)),
            )
        )
    return plan


def _sen12ms_cells(rng: np.random.Generator, dominant: int | None = None) -> list[int]:
    """Voronoi cells of a SEN12MS patch: the dominant class 4 times, 0-2 other classes once."""
    n = len(SIMPLIFIED_WEIGHTS)
    if dominant is None:
        dominant = int(rng.choice(n, p=SIMPLIFIED_WEIGHTS / SIMPLIFIED_WEIGHTS.sum()))
    others = [int(c) for c in rng.choice(n, size=int(rng.integers(0, 3)), replace=False)]
    return [dominant] * 4 + [c for c in others if c != dominant]


def sen12ms_params() -> tuple[np.ndarray, ...]:
    """(mu, sigma, offset, scale) mapping the SEN12MS model's z-scores to raw units."""
    mean = np.insert(S2_MEAN, 10, _B10_MEAN)
    std = np.insert(S2_STD, 10, _B10_STD)
    return sen12ms_model().raw_params(mean, std, (1,) * 13, SEN12MS_IMAGE_SIZE, _sen12ms_cells)


def _sen_stem(p: SenPatch, mod: str) -> str:
    """File stem of a patch's ``mod`` ('s1', 's2', 'lc') GeoTIFF."""
    return f"{p.season}_{mod}_{p.scene}_p{p.number}"


def _render_sen12ms(p: SenPatch, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S2 (13, 256, 256) uint16, S1 (2, 256, 256) float32 dB, LC (4, 256, 256) uint16."""
    model = sen12ms_model()
    mu, sigma, offset, scale = sen12ms_params()
    rng = np.random.default_rng([seed, p.index, 2])
    cells = _sen12ms_cells(rng, p.dominant)
    z2, z1, cmap = model.render(cells, rng, SEN12MS_IMAGE_SIZE)
    s2 = to_uint16(s2_reflectance(z2, mu, sigma))
    s1 = s1_db(z1, offset, scale)
    igbp_choice = np.array([codes[int(rng.integers(0, len(codes)))] for codes in SIMPLIFIED_TO_IGBP])
    igbp = igbp_choice[cmap].astype(np.uint16)
    if p.role == "unlabelled":
        igbp[:] = 0  # no valid IGBP code (fill value)
    lc = np.stack(
        [
            igbp,
            (10 + 10 * cmap).astype(np.uint16),
            (2 + cmap).astype(np.uint16),
            (20 + cmap).astype(np.uint16),
        ]
    )
    return s2, s1, lc


def _write_sen12ms_patch(root: Path, p: SenPatch, seed: int) -> dict[str, np.ndarray]:
    """The three GeoTIFFs of one patch; returns the arrays written."""
    s2, s1, lc = _render_sen12ms(p, seed)
    origin = (400000.0 + 2560.0 * p.number, 4000000.0 + 2560.0 * p.scene)
    for mod, arr in (("s1", s1), ("s2", s2), ("lc", lc)):
        folder = root / p.season / f"{mod}_{p.scene}"
        folder.mkdir(parents=True, exist_ok=True)
        write_geotiff(folder / f"{_sen_stem(p, mod)}.tif", arr, epsg=32632, origin=origin, resolution=10.0)
    return {"s2": s2, "s1": s1, "lc": lc}


def write_sen12ms(
    root: str | os.PathLike[str],
    n: int = 192,
    *,
    counts: tuple[int, int, int] | None = None,
    seed: int = 0,
    n_unlabelled: int = 0,
    workers: int = 1,
    progress: bool = False,
    return_arrays: bool = False,
) -> Manifest:
    """Write ``n`` patches (+ ``n_unlabelled`` with an all-fill IGBP layer) in SEN12MS layout.

    Season folders with ``s1_/s2_/lc_<scene>`` folders of 8 patches each, and ``splits/val_list.txt``,
    ``splits/test_list.txt`` (S2 file names, as the SEN12MS repository's lists; train = the rest). An
    empty split gets no list; when both held-out splits are empty, ``splits/train_list.txt`` lists
    the train patches.
    """
    root = Path(root)
    plan = sen_patch_plan(n, seed, n_unlabelled, counts)
    arrays = run_patches(_write_sen12ms_patch, root, plan, seed, workers, progress, calibrate=sen12ms_params)
    (root / "splits").mkdir(parents=True, exist_ok=True)
    lists = {
        fname: "".join(_sen_stem(p, "s2") + ".tif\n" for p in plan if p.role == role)
        for role, fname in (("validation", "val_list.txt"), ("test", "test_list.txt"))
    }
    if not any(lists.values()):  # no held-out list: name the train patches (else the scene hash rules)
        lists["train_list.txt"] = "".join(_sen_stem(p, "s2") + ".tif\n" for p in plan if p.role == "train")
    for fname, text in lists.items():
        if text:  # an empty split gets no list (readers reject a split list that lists nothing)
            (root / "splits" / fname).write_text(text)
    m = Manifest(format="sen12ms", root=str(root), splits={"train": [], "validation": [], "test": []})
    for p in sorted(plan, key=lambda q: (q.season, q.scene, q.number)):
        name = _sen_stem(p, "s2")
        (m.splits[p.role] if p.role in m.splits else m.unlabelled).append(name)
    if return_arrays:
        m.arrays = {_sen_stem(p, "s2"): a for p, a in zip(plan, arrays, strict=True)}
    return m
