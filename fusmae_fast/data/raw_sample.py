"""What a reader produces, shared by the readers, the item transform and the packed store (a leaf).

A reader yields :class:`RawSample` s: the values exactly as stored on disk (S2 uint16 at each band
group's native resolution, S1 float32 dB), the decoded label and the patch name. :class:`S2Layout`
says how the S2 bands of a format are grouped by native resolution; :class:`DatasetInfo` holds the
facts a packed store's index records. This module imports only :mod:`fusmae_fast.data.bands`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusmae_fast.data.bands import BEN_S2_GROUPS, S2_BANDS, SEN12MS_IMAGE_SIZE


@dataclass(frozen=True)
class S2Layout:
    """How S2 bands are stored: groups of bands sharing a native pixel size (side length)."""

    groups: tuple[tuple[tuple[str, ...], int], ...]
    """(band names, side in pixels) per group; together the groups hold each of the 12 bands once."""

    def __post_init__(self) -> None:
        bands = [b for names, _ in self.groups for b in names]
        if sorted(bands) != sorted(S2_BANDS):
            raise ValueError(f"S2 layout must hold each of {S2_BANDS} once, got {bands}")
        for names, size in self.groups:
            if size < 1 or not names:
                raise ValueError(f"bad S2 layout group {names} of size {size}")

    @property
    def full_size(self) -> int:
        """Side of the finest group: every band is brought to this size before fitting."""
        return max(size for _, size in self.groups)

    def positions(self) -> list[tuple[int, int]]:
        """For each output band (in :data:`S2_BANDS` order): (group index, index within the group)."""
        where = {b: (g, j) for g, (names, _) in enumerate(self.groups) for j, b in enumerate(names)}
        return [where[b] for b in S2_BANDS]

    def to_json(self) -> list[dict[str, Any]]:
        return [{"bands": list(names), "size": size} for names, size in self.groups]

    @staticmethod
    def from_json(obj: list[dict[str, Any]]) -> S2Layout:
        return S2Layout(tuple((tuple(g["bands"]), int(g["size"])) for g in obj))


BEN_LAYOUT = S2Layout(BEN_S2_GROUPS)
"""BigEarthNet v1/v2: 10 m bands 120x120, 20 m bands 60x60, 60 m bands 20x20."""

SEN12MS_LAYOUT = S2Layout(((S2_BANDS, SEN12MS_IMAGE_SIZE),))
"""SEN12MS: all 12 kept bands at 256x256 (the dataset is distributed resampled to 10 m)."""


@dataclass
class RawSample:
    """One patch as stored: no resampling, no normalisation."""

    s1: np.ndarray | None
    """(2, N, N) float32 dB [VV, VH], or None when S1 is not read."""
    s2: tuple[np.ndarray, ...] | None
    """One uint16 array (bands, n, n) per :class:`S2Layout` group, or None when S2 is not read."""
    label: np.ndarray
    """(19,) float32 multi-hot (BigEarthNet) or () int64 class id (SEN12MS)."""
    name: str
    """The patch name (the S2 patch name for BigEarthNet, the S2 file stem for SEN12MS)."""


@dataclass(frozen=True)
class Georeference:
    """Where a patch lies: the CRS and bounds of its reference GeoTIFF (BigEarthNet: the S2 band B02,
    SEN12MS: the S2 file), whose pixel grid is the layout's full size."""

    epsg: int
    """EPSG code of the CRS (a UTM zone for BigEarthNet and SEN12MS); 0 when the file has none."""
    bounds: tuple[float, float, float, float]
    """left, bottom, right, top in the CRS's units (metres)."""


@dataclass
class DatasetInfo:
    """Facts about a dataset that the packed store's index records."""

    kind: str
    """'bigearthnet' (19-class multi-hot) or 'sen12ms' (10-class id)."""
    source: dict[str, Any] = field(default_factory=dict)
    """Format name, paths and options of the source."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Patches left out while indexing, by reason (e.g. 'no_19_class_label', 'excluded')."""
    skipped_patches: list[dict[str, str]] = field(default_factory=list)
    """Bad patches left out with ``skip_bad``: one ``{"patch", "file", "reason"}`` record each (see
    :mod:`fusmae_fast.data.bad_patches`)."""
