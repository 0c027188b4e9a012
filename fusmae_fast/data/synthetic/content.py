"""The content model of the synthetic datasets: label-dependent images as z-scores, then raw units.

A patch is a Voronoi partition into regions, each region showing one of the patch's classes. Every
class has a fixed spectral signature (one value per S2 band), a fixed oriented texture, and an S1
signature partly derived from the S2 one, so S1 and S2 are correlated and both depend on the labels;
white noise (S2) and speckle (S1) are added. The z-scores are mapped to raw units so that the
per-band statistics approach docs/design.md §5's: S2 is log-normal with the BigEarthNet mean/std per
band (positive, right-skewed like reflectance), S1 is normal in dB around -12.6 / -19.3. Coarse S2
bands are block means of the 10 m rendering (as a 20 m/60 m pixel integrates the ground it covers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fusmae_fast.data.bands import S1_MEAN, S1_STD


class ContentModel:
    """Fixed per-class signatures and textures; renders label-dependent z-scores (see module doc)."""

    SIGNATURE_SCALE = 0.75
    """Scale of a class's signature in z units (its distance from the band mean)."""
    CELL_JITTER = 0.3
    """Std of each Voronoi cell's own offset from its class signature, per band."""
    NOISE_S2 = 0.3
    """Std of the white noise added to every S2 pixel (z units)."""
    SPECKLE_S1 = 0.45
    """Std of the speckle added to every S1 pixel (z units)."""
    TEXTURE_SCALE = 0.35
    """Std of the per-class, per-band amplitude of the oriented texture."""

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
            self._tex_var[key] = block_mean(self.textures(size).astype(np.float64), factor).var(axis=(1, 2))
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
        mixture's mean/variance mapped to docs/design.md §5's dB mean/std.
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


def s2_reflectance(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """z-scores -> log-normal reflectance (float64, unrounded)."""
    return np.exp(mu[:, None, None] + sigma[:, None, None] * z.astype(np.float64))


def to_uint16(x: np.ndarray) -> np.ndarray:
    """Raw reflectance -> uint16 (rounded, clipped to 0..65535), the stored S2 dtype."""
    return np.clip(np.rint(x), 0, 65535).astype(np.uint16)


def block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """(C, H, W) -> (C, H / factor, W / factor): the mean of each ``factor`` x ``factor`` block."""
    if factor == 1:
        return x
    c, h, w = x.shape
    return x.reshape(c, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def s1_db(z1: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """z-scores -> S1 backscatter in dB (float32), ``offset + scale * z`` per band."""
    return (offset[:, None, None] + scale[:, None, None] * z1).astype(np.float32)
