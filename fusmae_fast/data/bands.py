"""Band names, native resolutions and the normalisation statistics of docs/design.md §5.

Output band order everywhere: S2 ``B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12`` (12 bands, B10 is
not in L2A and is dropped from SEN12MS's L1C), S1 ``VV VH`` in dB.
"""

from __future__ import annotations

import numpy as np

S2_BANDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B11",
    "B12",
)
"""The 12 Sentinel-2 bands in the order of every ``s2`` tensor."""

S1_BANDS: tuple[str, ...] = ("VV", "VH")
"""The 2 Sentinel-1 polarisations in the order of every ``s1`` tensor."""

SEN12MS_S2_BANDS: tuple[str, ...] = S2_BANDS[:10] + ("B10",) + S2_BANDS[10:]
"""Band order of SEN12MS's 13-band L1C GeoTIFFs: :data:`S2_BANDS` with B10 between B09 and B11
(B10 is dropped when read)."""

BEN_S2_GROUPS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("B02", "B03", "B04", "B08"), 120),
    (("B05", "B06", "B07", "B8A", "B11", "B12"), 60),
    (("B01", "B09"), 20),
)
"""BigEarthNet S2 bands grouped by native resolution (10 m, 20 m, 60 m) with their pixel size per side."""

BEN_IMAGE_SIZE = 120
"""BigEarthNet patch side in 10 m pixels."""

SEN12MS_IMAGE_SIZE = 256
"""SEN12MS patch side in 10 m pixels."""

S2_MEAN = np.array(
    [340.77, 429.94, 614.22, 590.24, 950.68, 1792.46, 2075.47, 2218.95, 2266.46, 2246.06, 1594.43, 1009.33],
    dtype=np.float32,
)
"""Per-band mean of BigEarthNet S2 L2A (raw uint16 reflectance units), docs/design.md §5."""

S2_STD = np.array(
    [554.81, 572.42, 582.88, 675.89, 729.90, 1096.01, 1273.45, 1365.46, 1356.14, 1302.33, 1079.19, 818.87],
    dtype=np.float32,
)
"""Per-band standard deviation of BigEarthNet S2 L2A, docs/design.md §5."""

S1_MEAN = np.array([-12.620, -19.290], dtype=np.float32)
"""Per-band mean of BigEarthNet S1 (VV, VH) in dB, docs/design.md §5."""

S1_STD = np.array([5.116, 5.464], dtype=np.float32)
"""Per-band standard deviation of BigEarthNet S1 (VV, VH) in dB, docs/design.md §5."""
