"""Patch footprints: each patch's GeoTIFF bounds as a polygon in lon/lat (OGC:CRS84), and its WKB.

The footprint of a patch is the rectangle its own GeoTIFF's georeference covers (the S2 10 m band
B02 for BigEarthNet, the S2 file for SEN12MS), in the file's CRS (a UTM zone for both datasets); for
a dataset fitted by centre crop (SEN12MS's default) it is the cropped window the encoder sees. The
four corners are transformed to longitude/latitude by GDAL/PROJ (``rasterio.warp.transform``); the ring
runs counter-clockwise (lower-left, lower-right, upper-right, upper-left, lower-left again): a
north-up projected rectangle keeps its orientation in lon/lat.

A packed store does not keep its patches' georeference yet; embedding a store with geometry stops with
a message saying to re-convert, or to pass ``--no-geometry``.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from fusmae_fast.data.errors import DatasetError

LONLAT = "OGC:CRS84"
"""The footprints' CRS: WGS 84 longitude, latitude (GeoParquet's default)."""
RING_POINTS = 5
"""Points of a footprint ring (four corners and the first again)."""


class NoGeoreferenceError(ValueError):
    """The dataset cannot give its patches' footprints (a store written without georeference)."""


def patch_geotiff(ds: Dataset, index: int) -> Path:
    """The GeoTIFF whose georeference gives the footprint of patch ``index`` of a raw reader."""
    from fusmae_fast.data.bigearthnet import BigEarthNetV1, BigEarthNetV2, ben_band_files, v2_s2_folder
    from fusmae_fast.data.sen12ms import SEN12MS

    name = ds.names[index]  # type: ignore[attr-defined]
    if isinstance(ds, BigEarthNetV1):
        if ds.s2_root is not None:
            return ben_band_files(ds.s2_root / name, name, ("B02",))[0]
        s1 = ds.s1_names[index]
        return ben_band_files(ds.s1_root / s1, s1, ("VV",))[0]  # type: ignore[operator]
    if isinstance(ds, BigEarthNetV2):
        return ben_band_files(v2_s2_folder(ds.s2_dir, name), name, ("B02",))[0]
    if isinstance(ds, SEN12MS):
        season, scene, _ = ds.patches[index]
        return ds.scene_dirs[(season, "s2", scene)] / f"{name}.tif"
    raise NoGeoreferenceError(f"{type(ds).__name__}: no georeference known for this kind of dataset")


def check_georeferenced(ds: Dataset, where: str) -> None:
    """Raise :class:`NoGeoreferenceError` (one line) when ``ds`` cannot give footprints."""
    from fusmae_fast.data.store import PackedDataset

    if isinstance(ds, PackedDataset):
        raise NoGeoreferenceError(
            f"{where}: the store keeps no georeference (written before stores kept it): re-convert the "
            "raw dataset with fusmae-fast convert, or pass --no-geometry"
        )
    if len(ds):  # type: ignore[arg-type]
        patch_geotiff(ds, 0)  # raises for a kind of dataset without known georeference


@functools.lru_cache(maxsize=16)
def _to_lonlat(crs_wkt: str):  # -> a function (xs, ys) -> (lons, lats)
    from rasterio.crs import CRS
    from rasterio.warp import transform

    src, dst = CRS.from_wkt(crs_wkt), CRS.from_user_input(LONLAT)
    return lambda xs, ys: transform(src, dst, xs, ys)


def footprint(path: Path, crop: int | None = None) -> np.ndarray:
    """(5, 2) float64 lon/lat ring of the GeoTIFF's extent (see the module docstring); with ``crop``,
    of its centred ``crop`` x ``crop`` pixel window (what the encoder sees after ``fit="crop"``)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    from fusmae_fast.data.geotiff import gdal_env

    try:
        with gdal_env(quiet=False), rasterio.open(path) as src:
            crs, affine, h, w = src.crs, src.transform, src.height, src.width
    except RasterioIOError as exc:
        raise DatasetError(f"{path}: unreadable GeoTIFF ({exc})") from exc
    if crs is None:
        raise NoGeoreferenceError(f"{path}: the GeoTIFF has no CRS; pass --no-geometry")
    top, left, bottom, right = 0, 0, h, w
    if crop is not None and crop < min(h, w):
        top, left = (h - crop) // 2, (w - crop) // 2
        bottom, right = top + crop, left + crop
    cols = [left, right, right, left, left]
    rows = [bottom, bottom, top, top, bottom]
    xs = [affine.a * c + affine.b * r + affine.c for c, r in zip(cols, rows, strict=True)]
    ys = [affine.d * c + affine.e * r + affine.f for c, r in zip(cols, rows, strict=True)]
    lons, lats = _to_lonlat(crs.to_wkt())(xs, ys)
    return np.stack([np.asarray(lons, np.float64), np.asarray(lats, np.float64)], axis=1)


def polygon_wkb(ring: np.ndarray) -> bytes:
    """ISO WKB (little-endian) of a one-ring polygon given as (points, 2) x/y coordinates."""
    ring = np.ascontiguousarray(ring, dtype="<f8")
    return struct.pack("<BIII", 1, 3, 1, ring.shape[0]) + ring.tobytes()


def ring_bbox(rings: np.ndarray) -> np.ndarray:
    """(n, 4) xmin, ymin, xmax, ymax of (n, points, 2) rings."""
    return np.concatenate([rings.min(axis=1), rings.max(axis=1)], axis=1)
