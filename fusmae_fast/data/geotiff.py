"""GeoTIFF reading and writing with rasterio, with errors that name the file.

Reading checks, in order: the file exists, GDAL can open it, the band count, the pixel shape, the
dtype, and (for floating-point rasters) that every pixel is finite. ``nan_policy="error"`` (default)
raises on NaN/Inf, ``nan_policy="zero"`` replaces them with 0 (in the file's units, e.g. 0 dB).
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from fusmae_fast.data.errors import DatasetError, MissingDataError
from fusmae_fast.data.raw_sample import Georeference

NanPolicy = Literal["error", "zero"]
NAN_POLICIES: tuple[str, ...] = ("error", "zero")

# GDAL lists a file's folder on open to look for sidecars (.aux.xml, .ovr); BigEarthNet folders hold
# none, so the listing is skipped: opening each of the many small band files reads no directory.
_GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_PAM_ENABLED": "NO"}


def check_nan_policy(nan_policy: str) -> None:
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")


@contextlib.contextmanager
def gdal_env(quiet: bool = True) -> Iterator[None]:
    """A rasterio environment for reading many small GeoTIFFs (enter once around a batch of reads).

    ``quiet`` also silences rasterio's NotGeoreferencedWarning (pixels are read, not their
    georeference); pass False in worker threads (warning filters are process-wide, not thread-safe).
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with rasterio.Env(**_GDAL_OPTIONS):
        if not quiet:
            yield
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            yield


def read_geotiff(
    path: str | os.PathLike[str],
    *,
    count: int,
    shape: tuple[int, int],
    dtype: type | np.dtype,
    nan_policy: NanPolicy = "error",
) -> np.ndarray:
    """Read all bands of a GeoTIFF as a (count, H, W) array of ``dtype``.

    ``dtype`` is the dtype the format prescribes. An integer dtype must match the file exactly; a
    floating dtype accepts any floating file dtype (cast to ``dtype``). Raises
    :class:`MissingDataError` or :class:`DatasetError` naming ``path``.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    want = np.dtype(dtype)
    try:
        with rasterio.open(path) as src:
            got_count, got_shape, got_dtype = src.count, (src.height, src.width), np.dtype(src.dtypes[0])
            if got_count != count:
                raise DatasetError(f"{path}: expected {count} band(s), the file has {got_count}")
            if got_shape != tuple(shape):
                raise DatasetError(
                    f"{path}: expected {shape[0]}x{shape[1]} pixels, got {got_shape[0]}x{got_shape[1]}"
                )
            ok = got_dtype == want if want.kind in "iu" else got_dtype.kind == "f"
            if not ok:
                raise DatasetError(f"{path}: expected dtype {want.name}, the file holds {got_dtype.name}")
            data = src.read()
    except RasterioIOError as e:
        if not Path(path).is_file():
            raise MissingDataError(f"{path}: missing file") from None
        raise DatasetError(f"{path}: unreadable GeoTIFF ({e})") from e
    if want.kind == "f":
        data = data.astype(want, copy=False)
        bad = ~np.isfinite(data)
        if bad.any():
            if nan_policy == "error":
                raise DatasetError(
                    f"{path}: {int(bad.sum())} NaN/Inf pixel(s) (pass nan_policy='zero' to replace them by 0)"
                )
            check_nan_policy(nan_policy)
            data = np.where(bad, 0, data).astype(want)
    return data


def read_georeference(path: str | os.PathLike[str]) -> Georeference:
    """The EPSG code (0 if none) and bounds of a GeoTIFF, from its header (no pixel read)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            epsg = src.crs.to_epsg() if src.crs is not None else None
            b = src.bounds
    except RasterioIOError as e:
        if not Path(path).is_file():
            raise MissingDataError(f"{path}: missing file") from None
        raise DatasetError(f"{path}: unreadable GeoTIFF ({e})") from e
    return Georeference(epsg=int(epsg or 0), bounds=(b.left, b.bottom, b.right, b.top))


@functools.lru_cache(maxsize=64)
def _crs(epsg: int):  # -> rasterio.crs.CRS (imported lazily)
    from rasterio.crs import CRS

    return CRS.from_epsg(epsg)


def write_geotiff(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    epsg: int = 32633,
    origin: tuple[float, float] = (500000.0, 5000000.0),
    resolution: float = 10.0,
) -> None:
    """Write a (count, H, W) or (H, W) array as an uncompressed, north-up GeoTIFF in CRS ``epsg``.

    ``origin`` is the upper-left corner (x, y) in the CRS's metres, ``resolution`` the pixel size.
    Wrap many writes in :func:`gdal_env` (one GDAL environment for the batch, not one per file).
    """
    import rasterio
    from rasterio.transform import Affine

    arr = data[None] if data.ndim == 2 else data
    if arr.ndim != 3:
        raise ValueError(f"write_geotiff wants (H, W) or (C, H, W), got shape {data.shape}")
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype.name,
        crs=_crs(epsg),
        transform=Affine(resolution, 0.0, origin[0], 0.0, -resolution, origin[1]),  # north-up
    ) as dst:
        dst.write(arr)
