"""Label vocabularies: CORINE (43) -> BigEarthNet-19, and IGBP (17) -> simplified IGBP (10).

The 19-class order is the official ``label_indices.json`` order of BigEarthNet (docs/design.md §5).
The mapping drops 11 CORINE names that have no 19-class counterpart; a patch whose labels are all
dropped has no 19-class label and is skipped by the readers (with a count).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fusmae_fast.data.errors import DatasetError

BEN19_NAMES: tuple[str, ...] = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)
"""The 19 BigEarthNet classes, index = position in the multi-hot label."""

CLC43_TO_BEN19: dict[str, int | None] = {
    "Continuous urban fabric": 0,
    "Discontinuous urban fabric": 0,
    "Industrial or commercial units": 1,
    "Road and rail networks and associated land": None,
    "Port areas": None,
    "Airports": None,
    "Mineral extraction sites": None,
    "Dump sites": None,
    "Construction sites": None,
    "Green urban areas": None,
    "Sport and leisure facilities": None,
    "Non-irrigated arable land": 2,
    "Permanently irrigated land": 2,
    "Rice fields": 2,
    "Vineyards": 3,
    "Fruit trees and berry plantations": 3,
    "Olive groves": 3,
    "Pastures": 4,
    "Annual crops associated with permanent crops": 3,
    "Complex cultivation patterns": 5,
    "Land principally occupied by agriculture, with significant areas of natural vegetation": 6,
    "Agro-forestry areas": 7,
    "Broad-leaved forest": 8,
    "Coniferous forest": 9,
    "Mixed forest": 10,
    "Natural grassland": 11,
    "Moors and heathland": 12,
    "Sclerophyllous vegetation": 12,
    "Transitional woodland/shrub": 13,
    "Beaches, dunes, sands": 14,
    "Bare rock": None,
    "Sparsely vegetated areas": 11,
    "Burnt areas": None,
    "Inland marshes": 15,
    "Peatbogs": 15,
    "Salt marshes": 16,
    "Salines": 16,
    "Intertidal flats": None,
    "Water courses": 17,
    "Water bodies": 17,
    "Coastal lagoons": 18,
    "Estuaries": 18,
    "Sea and ocean": 18,
}
"""Every CORINE level-3 name of BigEarthNet v1 (official 43-class order) -> 19-class index or None."""

CLC43_NAMES: tuple[str, ...] = tuple(CLC43_TO_BEN19)
"""The 43 CORINE names in the official order."""

_BEN19_INDEX = {name: i for i, name in enumerate(BEN19_NAMES)}


def ben19_multi_hot(names: Iterable[str], source: str) -> np.ndarray:
    """(19,) float32 multi-hot from a patch's label names.

    Accepts CORINE-43 names (v1 JSON) and 19-class names (v2 metadata); names mapping to nothing are
    dropped. An unknown name raises :class:`DatasetError` naming ``source``. All-zero means "no
    19-class label".
    """
    out = np.zeros(len(BEN19_NAMES), dtype=np.float32)
    for name in names:
        if not isinstance(name, str):
            raise DatasetError(f"{source}: label {name!r} is not a string")
        if name in CLC43_TO_BEN19:
            idx = CLC43_TO_BEN19[name]
        elif name in _BEN19_INDEX:
            idx = _BEN19_INDEX[name]
        else:
            raise DatasetError(f"{source}: unknown BigEarthNet label {name!r}")
        if idx is not None:
            out[idx] = 1.0
    return out


SIMPLIFIED_IGBP_NAMES: tuple[str, ...] = (
    "Forest",
    "Shrubland",
    "Savanna",
    "Grassland",
    "Wetlands",
    "Croplands",
    "Urban/Built-up",
    "Snow/Ice",
    "Barren",
    "Water",
)
"""The 10 simplified IGBP classes; class id = position (0-based; the SEN12MS papers number them 1..10)."""

IGBP_TO_SIMPLIFIED = np.array(
    # code: 0   1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17
    [-1, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 5, 7, 8, 9],
    dtype=np.int64,
)
"""Lookup IGBP code (1..17) -> simplified class id (0..9); -1 for invalid codes."""


def simplified_igbp_histogram(igbp: np.ndarray) -> np.ndarray:
    """(10,) int64 pixel counts of the simplified classes in an IGBP code layer (invalid codes ignored)."""
    codes = np.asarray(igbp).reshape(-1).astype(np.int64)
    valid = (codes >= 1) & (codes <= 17)
    classes = IGBP_TO_SIMPLIFIED[codes[valid]]
    return np.bincount(classes, minlength=len(SIMPLIFIED_IGBP_NAMES)).astype(np.int64)


def simplified_igbp_label(igbp: np.ndarray) -> int:
    """Simplified IGBP class id of a patch: argmax of the class histogram (ties: the lower id); -1 if the
    layer holds no valid IGBP code."""
    hist = simplified_igbp_histogram(igbp)
    return int(hist.argmax()) if hist.sum() > 0 else -1
