"""Patch footprints: a patch's georeference as a polygon in lon/lat (OGC:CRS84), and its WKB.

A patch's georeference (``RawDataset.georeference``: the EPSG code and bounds of its reference
GeoTIFF, read from the file by a reader, or as ``fusmae-fast convert`` recorded it in a store) covers
the layout's full pixel grid (BigEarthNet 120x120, SEN12MS 256x256). The footprint is that rectangle,
or for a dataset fitted by centre crop (SEN12MS's default) the centred window the encoder sees. Its
four corners are transformed to longitude/latitude by GDAL/PROJ (``rasterio.warp.transform``); the
ring runs counter-clockwise (lower-left, lower-right, upper-right, upper-left, lower-left again): a
north-up projected rectangle keeps its orientation in lon/lat. A store and the raw root it was
converted from give the same georeference, hence the same footprints.
"""

from __future__ import annotations

import functools
import struct

import numpy as np
from torch.utils.data import Dataset

from fusmae_fast.data.errors import NoGeoreferenceError
from fusmae_fast.data.raw_sample import Georeference

LONLAT = "OGC:CRS84"
"""The footprints' CRS: WGS 84 longitude, latitude (GeoParquet's default)."""
RING_POINTS = 5
"""Points of a footprint ring (four corners and the first again)."""


def check_georeferenced(ds: Dataset) -> None:
    """Raise :class:`NoGeoreferenceError` (one line) when ``ds`` cannot give its patches' footprints."""
    if len(ds):  # type: ignore[arg-type]
        ds.georeference(0)  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=64)
def _to_lonlat(epsg: int):  # -> a function (xs, ys) -> (lons, lats)
    from rasterio.crs import CRS
    from rasterio.warp import transform

    src, dst = CRS.from_epsg(epsg), CRS.from_user_input(LONLAT)
    return lambda xs, ys: transform(src, dst, xs, ys)


def footprint(geo: Georeference, full_size: int, crop: int | None = None, name: str = "") -> np.ndarray:
    """(5, 2) float64 lon/lat ring of a patch of ``full_size`` x ``full_size`` pixels (see the module
    docstring); with ``crop``, of its centred ``crop`` x ``crop`` window."""
    if geo.epsg == 0:
        raise NoGeoreferenceError(
            f"patch {name}: its GeoTIFF has no CRS with an EPSG code; pass --no-geometry"
        )
    left, bottom, right, top = geo.bounds
    if crop is not None and crop < full_size:
        dx, dy = (right - left) / full_size, (top - bottom) / full_size
        off = (full_size - crop) // 2
        left, right = left + off * dx, left + (off + crop) * dx
        top, bottom = top - off * dy, top - (off + crop) * dy
    xs = [left, right, right, left, left]
    ys = [bottom, bottom, top, top, bottom]
    lons, lats = _to_lonlat(geo.epsg)(xs, ys)
    return np.stack([np.asarray(lons, np.float64), np.asarray(lats, np.float64)], axis=1)


def polygon_wkb(ring: np.ndarray) -> bytes:
    """ISO WKB (little-endian) of a one-ring polygon given as (points, 2) x/y coordinates."""
    ring = np.ascontiguousarray(ring, dtype="<f8")
    return struct.pack("<BIII", 1, 3, 1, ring.shape[0]) + ring.tobytes()


def ring_bbox(rings: np.ndarray) -> np.ndarray:
    """(n, 4) xmin, ymin, xmax, ymax of (n, points, 2) rings."""
    return np.concatenate([rings.min(axis=1), rings.max(axis=1)], axis=1)
