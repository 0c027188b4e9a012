"""Tiny datasets written in exactly the real on-disk formats, with label-dependent content.

Writers: :func:`write_bigearthnet_v1`, :func:`write_bigearthnet_v2`, :func:`write_sen12ms` (and
:func:`write_sample` to pick one by format name). They produce the layouts the readers expect (SPEC §5):
folder and file names (S2 names with a one-digit hour for part of them), band files at native
resolution and dtype (uint16 S2, float32 dB S1, 4-layer uint16 LC), GeoTIFFs with a UTM CRS, the
metadata JSONs / parquet / split files of each format.

Content model (:class:`ContentModel`): a patch is a Voronoi partition into regions, each region
showing one of the patch's classes. Every class has a fixed spectral signature (one value per S2 band),
a fixed oriented texture, and an S1 signature partly derived from the S2 one, so S1 and S2 are
correlated and both depend on the labels; white noise (S2) and speckle (S1) are added. The z-scores
are mapped to raw units so that the per-band statistics approach SPEC §5's: S2 is log-normal with the
BigEarthNet mean/std per band (positive, right-skewed like reflectance), S1 is normal in dB around
-12.6 / -19.3. Coarse S2 bands are block means of the 10 m rendering (as a 20 m/60 m pixel integrates
the ground it covers). Everything is a function of (seed, patch index): same arguments, same bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusmae_fast.data.bands import (
    BEN_IMAGE_SIZE,
    BEN_S2_GROUPS,
    S1_BANDS,
    S1_MEAN,
    S1_STD,
    S2_BANDS,
    S2_MEAN,
    S2_STD,
    SEN12MS_IMAGE_SIZE,
)
from fusmae_fast.data.geotiff import gdal_env, write_geotiff
from fusmae_fast.data.labels import BEN19_NAMES, CLC43_TO_BEN19

FORMATS: tuple[str, ...] = ("bigearthnet-v1", "bigearthnet-v2", "sen12ms")

# Rough class frequencies (BigEarthNet-19 is dominated by arable land, forests and pastures).
BEN19_WEIGHTS = np.array(
    [6, 2, 20, 3, 10, 8, 9, 1, 10, 14, 12, 1.5, 2, 10, 0.5, 2, 0.5, 3, 4], dtype=np.float64
)
SIMPLIFIED_WEIGHTS = np.array([15, 10, 20, 15, 2, 15, 8, 1, 4, 10], dtype=np.float64)
SIMPLIFIED_TO_IGBP: tuple[tuple[int, ...], ...] = (
    (1, 2, 3, 4, 5), (6, 7), (8, 9), (10,), (11,), (12, 14), (13,), (15,), (16,), (17,),
)  # fmt: skip
_DROPPED_CLC = tuple(n for n, i in CLC43_TO_BEN19.items() if i is None)
_CLC_OF_BEN19: tuple[tuple[str, ...], ...] = tuple(
    tuple(n for n, i in CLC43_TO_BEN19.items() if i == c) for c in range(len(BEN19_NAMES))
)

# SEN12MS is L1C with a B10 (cirrus) band, low and dark: rough mean/std for it.
_B10_MEAN, _B10_STD = 20.0, 12.0
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


def split_counts(n: int) -> tuple[int, int, int]:
    """(train, validation, test) sizes for ``n`` patches: 4 : 1 : 1 (384 -> 256, 64, 64)."""
    if n < 1:
        raise ValueError(f"need at least 1 patch, got {n}")
    return n - 2 * (n // 6), n // 6, n // 6


class ContentModel:
    """Fixed per-class signatures and textures; renders label-dependent z-scores (see module doc)."""

    SIGNATURE_SCALE = 0.75
    CELL_JITTER = 0.3
    NOISE_S2 = 0.3
    SPECKLE_S1 = 0.45
    TEXTURE_SCALE = 0.35

    def __init__(self, num_classes: int, weights: np.ndarray, s2_bands: int = 12, seed: int = 20240613):
        rng = np.random.default_rng(seed)
        self.weights = weights / weights.sum()
        w = self.weights

        def standardise(sig: np.ndarray) -> np.ndarray:  # weighted zero mean, unit std per band
            sig = sig - (w[:, None] * sig).sum(0)
            return sig / np.sqrt((w[:, None] * sig**2).sum(0))

        self.num_classes = num_classes
        self.s2_bands = s2_bands
        self.s2_sig = standardise(rng.normal(size=(num_classes, s2_bands)))
        mix = rng.normal(size=(s2_bands, 2)) / np.sqrt(s2_bands)
        self.s1_sig = standardise(
            0.7 * standardise(self.s2_sig @ mix) + 0.7 * rng.normal(size=(num_classes, 2))
        )
        self.s2_tex = rng.normal(0.0, self.TEXTURE_SCALE, size=(num_classes, s2_bands))
        self.s1_tex = rng.normal(0.0, self.TEXTURE_SCALE, size=(num_classes, 2))
        self.angle = rng.uniform(0, np.pi, size=num_classes)
        self.wavelength = rng.uniform(5.0, 30.0, size=num_classes)
        self.phase = rng.uniform(0, 2 * np.pi, size=num_classes)
        self._textures: dict[int, np.ndarray] = {}
        self._tex_var: dict[tuple[int, int], np.ndarray] = {}
        self._raw_params: dict[tuple[Any, ...], tuple[np.ndarray, ...]] = {}

    def textures(self, size: int) -> np.ndarray:
        if size not in self._textures:
            yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
            proj = np.cos(self.angle)[:, None, None] * xx + np.sin(self.angle)[:, None, None] * yy
            self._textures[size] = np.sin(
                2 * np.pi * proj / self.wavelength[:, None, None] + self.phase[:, None, None]
            ).astype(np.float32)
        return self._textures[size]

    @staticmethod
    def cell_map(num_cells: int, rng: np.random.Generator, size: int) -> np.ndarray:
        """(size, size) Voronoi cell index per pixel, from ``num_cells`` random seed points."""
        seeds = rng.uniform(0, size, size=(num_cells, 2)).astype(np.float32)
        ax = np.arange(size, dtype=np.float32)
        d = (ax[None, :, None] - seeds[:, 0, None, None]) ** 2 + (
            ax[None, None, :] - seeds[:, 1, None, None]
        ) ** 2
        return d.argmin(0)

    def render(
        self, cell_classes: list[int], rng: np.random.Generator, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """z-scores (s2_bands, S, S), (2, S, S) and the (S, S) class map of a patch whose Voronoi cell i
        shows class ``cell_classes[i]`` (each cell with its own small deviation from the signature)."""
        cells = self.cell_map(len(cell_classes), rng, size)
        cls = np.asarray(cell_classes)[cells]
        tex = np.take_along_axis(self.textures(size), cls[None], axis=0)[0][..., None]
        jit2 = self.CELL_JITTER * rng.standard_normal((len(cell_classes), self.s2_bands))
        jit1 = self.CELL_JITTER * rng.standard_normal((len(cell_classes), 2))
        c2 = (self.SIGNATURE_SCALE * self.s2_sig[cell_classes] + jit2).astype(np.float32)
        c1 = (self.SIGNATURE_SCALE * self.s1_sig[cell_classes] + jit1).astype(np.float32)
        z2 = (c2[cells] + self.s2_tex[cls].astype(np.float32) * tex).transpose(2, 0, 1)
        z2 = z2 + self.NOISE_S2 * rng.standard_normal((self.s2_bands, size, size), dtype=np.float32)
        z1 = (c1[cells] + self.s1_tex[cls].astype(np.float32) * tex).transpose(2, 0, 1)
        z1 = z1 + self.SPECKLE_S1 * rng.standard_normal((2, size, size), dtype=np.float32)
        return z2, z1, cls

    def pixel_share(
        self, draw_cells: Callable[[np.random.Generator], list[int]], draws: int = 4000
    ) -> np.ndarray:
        """Expected fraction of pixels showing each class, for patches drawn by ``draw_cells``
        (cells have equal expected area)."""
        rng = np.random.default_rng(777)
        share = np.zeros(self.num_classes)
        for _ in range(draws):
            cells = draw_cells(rng)
            np.add.at(share, cells, 1.0 / len(cells))
        return share / draws

    def _texture_var(self, size: int, factor: int) -> np.ndarray:
        """Per-class variance of the texture block-averaged by ``factor``."""
        key = (size, factor)
        if key not in self._tex_var:
            self._tex_var[key] = _block_mean(self.textures(size).astype(np.float64), factor).var(axis=(1, 2))
        return self._tex_var[key]

    def raw_params(
        self,
        s2_mean: np.ndarray,
        s2_std: np.ndarray,
        factors: tuple[int, ...],
        size: int,
        draw_cells: Callable[[np.random.Generator], list[int]],
    ) -> tuple[np.ndarray, ...]:
        """Maps from z-scores to raw units with the target statistics in expectation.

        Over the dataset a band's z (block-averaged by ``factors[b]`` to its native resolution) is a
        mixture over classes c (pixel share pi_c) of normals with mean m_c = SIGNATURE_SCALE * sig_c
        and variance w_c (cell jitter, texture, noise / factor^2). S2 ``exp(mu_b + sigma_b * z)`` then
        has E = sum_c pi_c exp(sigma m_c + sigma^2 w_c / 2) (and likewise for the square): sigma_b is
        bisected to the target coefficient of variation, mu_b sets the mean. S1 is ``a + b * z`` with the
        mixture's mean/variance mapped to SPEC §5's dB mean/std.
        """
        key = (tuple(s2_mean.tolist()), tuple(s2_std.tolist()), factors, size)
        if key in self._raw_params:
            return self._raw_params[key]
        pi = self.pixel_share(draw_cells)
        mu, sigma = np.zeros(self.s2_bands), np.zeros(self.s2_bands)
        for b in range(self.s2_bands):
            f = factors[b]
            m = self.SIGNATURE_SCALE * self.s2_sig[:, b]
            w = (
                self.CELL_JITTER**2
                + self.NOISE_S2**2 / f**2
                + self.s2_tex[:, b] ** 2 * self._texture_var(size, f)
            )

            def moment(k: float, s: float, m: np.ndarray = m, w: np.ndarray = w) -> float:
                return float((pi * np.exp(k * s * m + (k * s) ** 2 * w / 2)).sum())

            target = (s2_std[b] / s2_mean[b]) ** 2
            lo, hi = 0.0, 4.0
            for _ in range(60):
                mid = (lo + hi) / 2
                cv2 = moment(2, mid) / moment(1, mid) ** 2 - 1
                lo, hi = (mid, hi) if cv2 < target else (lo, mid)
            sigma[b] = (lo + hi) / 2
            mu[b] = np.log(s2_mean[b]) - np.log(moment(1, sigma[b]))
        m1 = self.SIGNATURE_SCALE * self.s1_sig
        w1 = self.CELL_JITTER**2 + self.SPECKLE_S1**2 + self.s1_tex**2 * self._texture_var(size, 1)[:, None]
        mean1 = (pi[:, None] * m1).sum(0)
        var1 = (pi[:, None] * (w1 + m1**2)).sum(0) - mean1**2
        scale = S1_STD.astype(np.float64) / np.sqrt(var1)
        offset = S1_MEAN.astype(np.float64) - scale * mean1
        self._raw_params[key] = (mu, sigma, offset, scale)
        return self._raw_params[key]


def _s2_raw(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """z-scores -> log-normal reflectance (float64, unrounded)."""
    return np.exp(mu[:, None, None] + sigma[:, None, None] * z.astype(np.float64))


def _to_uint16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 65535).astype(np.uint16)


def _block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return x
    c, h, w = x.shape
    return x.reshape(c, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def _s1_db(z1: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (offset[:, None, None] + scale[:, None, None] * z1).astype(np.float32)


@dataclass
class Manifest:
    """What a writer wrote (for tests and the sample-data command)."""

    format: str
    root: str
    splits: dict[str, list[str]] = field(default_factory=dict)
    """Split name -> names of the patches in it (the readers' ``names``, in order)."""
    unlabelled: list[str] = field(default_factory=list)
    """Patches written with no 19-class / no valid IGBP label (the readers skip them)."""
    snow: list[str] = field(default_factory=list)
    cloud: list[str] = field(default_factory=list)
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)
    """With ``return_arrays``: name -> {'s2': tuple of groups, 's1': array, 'label': ...} as written."""

    @property
    def num_patches(self) -> int:
        return (
            sum(len(v) for v in self.splits.values())
            + len(self.unlabelled)
            + len(self.snow)
            + len(self.cloud)
        )


# ------------------------------------------------------------------------------------ BigEarthNet
_BEN_MODEL: ContentModel | None = None
_SEN_MODEL: ContentModel | None = None


def ben_model() -> ContentModel:
    global _BEN_MODEL
    if _BEN_MODEL is None:
        _BEN_MODEL = ContentModel(len(BEN19_NAMES), BEN19_WEIGHTS)
    return _BEN_MODEL


def sen12ms_model() -> ContentModel:
    global _SEN_MODEL
    if _SEN_MODEL is None:
        _SEN_MODEL = ContentModel(len(SIMPLIFIED_WEIGHTS), SIMPLIFIED_WEIGHTS, s2_bands=13, seed=20190715)
    return _SEN_MODEL


@dataclass
class _BenPatch:
    index: int
    role: str  # train | validation | test | unlabelled | snow | cloud
    acq: tuple[str, str, str, str, str, int]
    x: int
    y: int
    clc: list[str]
    classes: list[int]


def _counts(n: int, counts: tuple[int, int, int] | None) -> tuple[int, int, int]:
    if counts is None:
        return split_counts(n)
    if len(counts) != 3 or min(counts) < 0 or sum(counts) < 1:
        raise ValueError(f"counts must be 3 non-negative split sizes with a positive sum, got {counts}")
    return tuple(int(c) for c in counts)  # type: ignore[return-value]


def _ben_patch_plan(
    n: int,
    seed: int,
    n_unlabelled: int,
    n_snow: int,
    n_cloud: int,
    counts: tuple[int, int, int] | None = None,
) -> list[_BenPatch]:
    counts = _counts(n, counts)
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
        plan.append(_BenPatch(i, role, acq, x, y, [str(c) for c in clc], classes))
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


def _sen12ms_cells(rng: np.random.Generator, dominant: int | None = None) -> list[int]:
    """Voronoi cells of a SEN12MS patch: the dominant class 4 times, 0-2 other classes once."""
    n = len(SIMPLIFIED_WEIGHTS)
    if dominant is None:
        dominant = int(rng.choice(n, p=SIMPLIFIED_WEIGHTS / SIMPLIFIED_WEIGHTS.sum()))
    others = [int(c) for c in rng.choice(n, size=int(rng.integers(0, 3)), replace=False)]
    return [dominant] * 4 + [c for c in others if c != dominant]


def _ben_params() -> tuple[np.ndarray, ...]:
    return ben_model().raw_params(S2_MEAN, S2_STD, _BEN_FACTORS, BEN_IMAGE_SIZE, _ben_cells)


def _sen12ms_params() -> tuple[np.ndarray, ...]:
    mean = np.insert(S2_MEAN, 10, _B10_MEAN)
    std = np.insert(S2_STD, 10, _B10_STD)
    return sen12ms_model().raw_params(mean, std, (1,) * 13, SEN12MS_IMAGE_SIZE, _sen12ms_cells)


def _render_ben(patch: _BenPatch, seed: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Raw S2 groups (uint16 at native resolution) and S1 (float32 dB) of a BigEarthNet patch."""
    model = ben_model()
    mu, sigma, offset, scale = _ben_params()
    rng = np.random.default_rng([seed, patch.index, 1])
    classes = patch.classes or [int(rng.integers(0, model.num_classes))]  # unlabelled: some land cover
    cells = _ben_cells(rng, classes)
    z2, z1, _ = model.render(cells, rng, BEN_IMAGE_SIZE)
    groups = []
    for names, size in BEN_S2_GROUPS:
        idx = [S2_BANDS.index(b) for b in names]
        z = _block_mean(z2[idx].astype(np.float64), BEN_IMAGE_SIZE // size)
        groups.append(_to_uint16(_s2_raw(z, mu[idx], sigma[idx])))
    return tuple(groups), _s1_db(z1, offset, scale)


def _v1_names(p: _BenPatch) -> tuple[str, str]:
    sat, date, t2, t1, tile, _ = p.acq
    return f"S2{sat}_MSIL2A_{date}T{t2}_{p.x}_{p.y}", f"S1{sat}_IW_GRDH_1SDV_{date}T{t1}_{tile}_{p.x}_{p.y}"


def _v2_names(p: _BenPatch) -> tuple[str, str]:
    sat, date, t2, t1, tile, orbit = p.acq
    return (
        f"S2{sat}_MSIL2A_{date}T{int(t2):06d}_N9999_R{orbit:03d}_T{tile}_{p.x}_{p.y}",
        f"S1{sat}_IW_GRDH_1SDV_{date}T{t1}_{tile}_{p.x}_{p.y}",
    )


def _geo(p: _BenPatch) -> tuple[int, float, float]:
    """EPSG code and upper-left corner of a patch (1200 m patches on a per-tile grid)."""
    tile = p.acq[4]
    epsg = 32600 + int(tile[:2])
    return epsg, 300000.0 + 1200.0 * p.x, 5200000.0 - 1200.0 * p.y


def _write_ben_bands(folder: Path, stem: str, groups: tuple[np.ndarray, ...], p: _BenPatch) -> None:
    epsg, ulx, uly = _geo(p)
    for arr, (names, size) in zip(groups, BEN_S2_GROUPS, strict=True):
        res = 1200.0 / size
        for j, b in enumerate(names):
            write_geotiff(folder / f"{stem}_{b}.tif", arr[j], epsg=epsg, origin=(ulx, uly), resolution=res)


def _write_s1_bands(folder: Path, stem: str, s1: np.ndarray, p: _BenPatch) -> None:
    epsg, ulx, uly = _geo(p)
    for j, pol in enumerate(S1_BANDS):
        write_geotiff(folder / f"{stem}_{pol}.tif", s1[j], epsg=epsg, origin=(ulx, uly), resolution=10.0)


def _dump_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj))


def _write_v1_patch(root: Path, p: _BenPatch, seed: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    groups, s1 = _render_ben(p, seed)
    s2_name, s1_name = _v1_names(p)
    epsg, ulx, uly = _geo(p)
    coords2 = {"ulx": ulx, "uly": uly, "lrx": ulx + 1200.0, "lry": uly - 1200.0}
    sat, date, t2, t1, tile, orbit = p.acq
    d2 = root / "BigEarthNet-v1.0" / s2_name
    d2.mkdir(parents=True, exist_ok=True)
    _write_ben_bands(d2, s2_name, groups, p)
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
    _write_s1_bands(d1, s1_name, s1, p)
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


def _write_v2_patch(root: Path, p: _BenPatch, seed: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    from fusmae_fast.data.bigearthnet import v2_s1_folder, v2_s2_folder

    groups, s1 = _render_ben(p, seed)
    s2_name, s1_name = _v2_names(p)
    d2 = v2_s2_folder(root / "BigEarthNet-S2", s2_name)
    d2.mkdir(parents=True, exist_ok=True)
    _write_ben_bands(d2, s2_name, groups, p)
    d1 = v2_s1_folder(root / "BigEarthNet-S1", s1_name)
    d1.mkdir(parents=True, exist_ok=True)
    _write_s1_bands(d1, s1_name, s1, p)
    return groups, s1


def _run_patches(
    fn: Callable[[Path, Any, int], Any], root: Path, plan: list[Any], seed: int, workers: int, progress: bool
) -> list[Any]:
    """Write every planned patch (in worker processes when ``workers`` > 1); results in plan order."""
    from tqdm import tqdm

    _ben_params() if fn is not _write_sen12ms_patch else _sen12ms_params()  # calibrate once, before forking
    bar = tqdm(total=len(plan), desc="writing synthetic patches", disable=not progress, leave=False)
    if workers <= 1:
        out = []
        with gdal_env():
            for p in plan:
                out.append(fn(root, p, seed))
                bar.update()
        bar.close()
        return out
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    chunks = [plan[i::workers] for i in range(workers)]
    results: dict[int, Any] = {}
    with ctx.Pool(workers) as pool:
        for part in pool.imap_unordered(_write_chunk, [(fn, root, c, seed) for c in chunks]):
            for idx, r in part:
                results[idx] = r
            bar.update(len(part))
    bar.close()
    return [results[p.index] for p in plan]


def _write_chunk(args: tuple[Callable[[Path, Any, int], Any], Path, list[Any], int]) -> list[tuple[int, Any]]:
    fn, root, plan, seed = args
    with gdal_env():
        return [(p.index, fn(root, p, seed)) for p in plan]


def _ben_manifest(fmt: str, root: Path, plan: list[_BenPatch], names: list[str]) -> Manifest:
    m = Manifest(format=fmt, root=str(root), splits={"train": [], "validation": [], "test": []})
    for p, name in zip(plan, names, strict=True):
        if p.role in m.splits:
            m.splits[p.role].append(name)
        else:
            getattr(m, p.role).append(name)
    return m


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
    (``S2name,S1name`` lines, 4 : 1 : 1), and ``root/patches_with_seasonal_snow.csv`` /
    ``patches_with_cloud_and_shadow.csv`` listing the ``n_snow`` / ``n_cloud`` extra patches (written,
    but in no split). ``n_unlabelled`` extra patches carry only CORINE names without a 19-class
    counterpart and are listed in the train CSV (readers skip them with a count).
    """
    root = Path(root)
    plan = _ben_patch_plan(n, seed, n_unlabelled, n_snow, n_cloud, counts)
    arrays = _run_patches(_write_v1_patch, root, plan, seed, workers, progress)
    names = [_v1_names(p) for p in plan]
    splits_dir = root / "splits"
    splits_dir.mkdir(parents=True, exist_ok=True)
    for split, short in (("train", "train"), ("validation", "val"), ("test", "test")):
        lines = [
            f"{s2},{s1}"
            for p, (s2, s1) in zip(plan, names, strict=True)
            if p.role == split or (split == "train" and p.role == "unlabelled")
        ]
        (splits_dir / f"{short}.csv").write_text("".join(line + "\n" for line in lines))
    for role, fname in (
        ("snow", "patches_with_seasonal_snow.csv"),
        ("cloud", "patches_with_cloud_and_shadow.csv"),
    ):
        (root / fname).write_text(
            "".join(s2 + "\n" for p, (s2, _) in zip(plan, names, strict=True) if p.role == role)
        )
    m = _ben_manifest("bigearthnet-v1", root, plan, [s2 for s2, _ in names])
    if return_arrays:
        m.arrays = {
            s2: {"s2": g, "s1": s1, "label": p.classes, "s1_name": s1n}
            for p, (s2, s1n), (g, s1) in zip(plan, names, arrays, strict=True)
        }
    return m


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
    plan = _ben_patch_plan(n, seed, n_unlabelled, n_snow, n_cloud, counts)
    arrays = _run_patches(_write_v2_patch, root, plan, seed, workers, progress)
    names = [_v2_names(p) for p in plan]
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
            "s2v1_name": [_v1_names(p)[0] for p in plan],
            "contains_seasonal_snow": [p.role == "snow" for p in plan],
            "contains_cloud_or_shadow": [p.role == "cloud" for p in plan],
        }
    )
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "metadata.parquet")
    m = _ben_manifest("bigearthnet-v2", root, plan, [s2 for s2, _ in names])
    if return_arrays:
        m.arrays = {
            s2: {"s2": g, "s1": s1, "label": p.classes, "s1_name": s1n}
            for p, (s2, s1n), (g, s1) in zip(plan, names, arrays, strict=True)
        }
    return m


# ---------------------------------------------------------------------------------------- SEN12MS
_SEASONS = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter")
SEN12MS_PER_SCENE = 8


@dataclass
class _SenPatch:
    index: int
    role: str  # train | validation | test | unlabelled
    season: str
    scene: int
    number: int
    dominant: int


def _sen_patch_plan(
    n: int, seed: int, n_unlabelled: int, counts: tuple[int, int, int] | None = None
) -> list[_SenPatch]:
    counts = _counts(n, counts)
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
            _SenPatch(
                i,
                role,
                season,
                scene,
                30 + 3 * (i % SEN12MS_PER_SCENE) + scene_index,
                int(rng.choice(len(p), p=p)),
            )
        )
    return plan


def _sen_stem(p: _SenPatch, mod: str) -> str:
    return f"{p.season}_{mod}_{p.scene}_p{p.number}"


def _render_sen12ms(p: _SenPatch, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S2 (13, 256, 256) uint16, S1 (2, 256, 256) float32 dB, LC (4, 256, 256) uint16."""
    model = sen12ms_model()
    mu, sigma, offset, scale = _sen12ms_params()
    rng = np.random.default_rng([seed, p.index, 2])
    cells = _sen12ms_cells(rng, p.dominant)
    z2, z1, cmap = model.render(cells, rng, SEN12MS_IMAGE_SIZE)
    s2 = _to_uint16(_s2_raw(z2, mu, sigma))
    s1 = _s1_db(z1, offset, scale)
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


def _write_sen12ms_patch(root: Path, p: _SenPatch, seed: int) -> dict[str, np.ndarray]:
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
    ``splits/test_list.txt`` (S2 file names, as the SEN12MS repository's lists; train = the rest).
    """
    root = Path(root)
    plan = _sen_patch_plan(n, seed, n_unlabelled, counts)
    arrays = _run_patches(_write_sen12ms_patch, root, plan, seed, workers, progress)
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for role, fname in (("validation", "val_list.txt"), ("test", "test_list.txt")):
        (root / "splits" / fname).write_text(
            "".join(_sen_stem(p, "s2") + ".tif\n" for p in plan if p.role == role)
        )
    m = Manifest(format="sen12ms", root=str(root), splits={"train": [], "validation": [], "test": []})
    for p in sorted(plan, key=lambda q: (q.season, q.scene, q.number)):
        name = _sen_stem(p, "s2")
        (m.splits[p.role] if p.role in m.splits else m.unlabelled).append(name)
    if return_arrays:
        m.arrays = {_sen_stem(p, "s2"): a for p, a in zip(plan, arrays, strict=True)}
    return m


def write_sample(
    root: str | os.PathLike[str], fmt: str, n: int, *, seed: int = 0, workers: int = 1, progress: bool = False
) -> Manifest:
    """Write a sample of format ``fmt`` (one of :data:`FORMATS`)."""
    writers: dict[str, Callable[..., Manifest]] = {
        "bigearthnet-v1": write_bigearthnet_v1,
        "bigearthnet-v2": write_bigearthnet_v2,
        "sen12ms": write_sen12ms,
    }
    if fmt not in writers:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    return writers[fmt](root, n, seed=seed, workers=workers, progress=progress)
