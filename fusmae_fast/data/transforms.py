"""Raw sample -> model item: upsample, fit to the image size, normalise (docs/design.md §5).

Order of operations, the same for every source and for the packed store:

1. S2 band groups at coarser native resolution (BigEarthNet 20 m: 60x60, 60 m: 20x20) are upsampled
   to the finest group's size (120x120) with bilinear interpolation, ``align_corners=False`` (pixel
   centres of a 20 m pixel sit between the centres of the 2x2 10 m pixels it covers). 10 m bands
   are untouched. Bands are put in the order B01..B08, B8A, B09, B11, B12.
2. Fit to ``image_size`` when it differs from the native size: ``fit="resize"`` resamples bilinearly
   (antialiased when shrinking), ``fit="crop"`` takes the centred ``image_size`` window (keeps the
   10 m pixel size; SEN12MS's default, 256 -> 120).
3. ``normalize=True``: per band (x - mean) / std with the BigEarthNet statistics of docs/design.md
   §5, for every source (the encoder is pretrained with them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from fusmae_fast.data.bands import S1_MEAN, S1_STD, S2_BANDS, S2_MEAN, S2_STD
from fusmae_fast.data.raw_sample import RawSample, S2Layout

Fit = Literal["resize", "crop"]
FITS: tuple[str, ...] = ("resize", "crop")

_S2_MEAN, _S2_STD = S2_MEAN[:, None, None], S2_STD[:, None, None]
_S1_MEAN, _S1_STD = S1_MEAN[:, None, None], S1_STD[:, None, None]

# The per-item work is done in numpy: torch's intra-op threads cost more than they save on
# these small arrays (and stall badly on a loaded machine); DataLoader workers are the parallelism.


@functools.lru_cache(maxsize=32)
def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and weight of i1 for each output pixel, PyTorch's align_corners=False rule:
    src = (dst + 0.5) * n_in / n_out - 0.5, clamped at 0."""
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsample_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """(C, h, w) float32 -> (C, size, size), bilinear, align_corners=False (= ``F.interpolate``)."""
    c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    r0, r1, wr = _bilinear_taps(h, size)
    c0, c1, wc = _bilinear_taps(w, size)
    rows = x[:, r0, :] * (1 - wr)[None, :, None] + x[:, r1, :] * wr[None, :, None]
    return rows[:, :, c0] * (1 - wc) + rows[:, :, c1] * wc


def resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """(C, h, w) -> (C, size, size): bilinear, align_corners=False; antialiased when shrinking."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if size >= h and size >= w:
        return upsample_bilinear(x, size)
    t = torch.from_numpy(np.ascontiguousarray(x))[None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[
        0
    ].numpy()


def center_crop(x: np.ndarray, size: int) -> np.ndarray:
    """(C, h, w) -> (C, size, size) centred window; error if the image is smaller."""
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"cannot centre-crop {h}x{w} to {size}x{size}; use fit='resize'")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def assemble_s2(groups: tuple[np.ndarray, ...], layout: S2Layout) -> np.ndarray:
    """Raw S2 band groups -> (12, N, N) float32 in S2_BANDS order, coarse groups upsampled to N."""
    n = layout.full_size
    up = []
    for arr, (names, size) in zip(groups, layout.groups, strict=True):
        if arr.shape != (len(names), size, size):
            raise ValueError(f"S2 group {names} should be {(len(names), size, size)}, got {arr.shape}")
        up.append(upsample_bilinear(np.asarray(arr, dtype=np.float32), n))
    out = np.empty((len(S2_BANDS), n, n), dtype=np.float32)
    for k, (g, j) in enumerate(layout.positions()):
        out[k] = up[g][j]
    return out


@dataclass(frozen=True)
class ItemTransform:
    """Turns a :class:`RawSample` into the item dict (``s1``, ``s2``, ``label``, ``name``)."""

    image_size: int = 120
    """Side of the output images in pixels."""
    normalize: bool = True
    """Per-band (x - mean) / std with the docs/design.md §5 statistics; False returns raw values."""
    fit: Fit = "resize"
    """How to reach ``image_size`` from the native size: 'resize' (bilinear) or 'crop' (centre)."""

    def __post_init__(self) -> None:
        if int(self.image_size) < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {self.fit!r}")

    def _fit(self, x: np.ndarray) -> np.ndarray:
        if self.fit == "crop":
            return center_crop(x, self.image_size)
        return resize_bilinear(x, self.image_size)

    def __call__(self, raw: RawSample, layout: S2Layout) -> dict[str, torch.Tensor | str]:
        item: dict[str, torch.Tensor | str] = {}
        if raw.s2 is not None:
            s2 = self._fit(assemble_s2(raw.s2, layout))
            item["s2"] = torch.from_numpy(
                np.ascontiguousarray((s2 - _S2_MEAN) / _S2_STD if self.normalize else s2)
            )
        if raw.s1 is not None:
            s1 = self._fit(np.array(raw.s1, dtype=np.float32))
            item["s1"] = torch.from_numpy(
                np.ascontiguousarray((s1 - _S1_MEAN) / _S1_STD if self.normalize else s1)
            )
        label = np.asarray(raw.label)
        item["label"] = (
            torch.tensor(int(label), dtype=torch.int64)
            if label.ndim == 0
            else torch.from_numpy(label.astype(np.float32, copy=True))
        )
        item["name"] = raw.name
        return item
