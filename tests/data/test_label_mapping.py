"""CORINE-43 -> BigEarthNet-19 (the docs/design.md §5 table, typed here independently), IGBP -> simplified."""

from __future__ import annotations

import numpy as np
import pytest

from fusmae_fast.data.errors import DatasetError
from fusmae_fast.data.labels import (
    BEN19_NAMES,
    CLC43_NAMES,
    ben19_multi_hot,
    simplified_igbp_histogram,
    simplified_igbp_label,
)

DESIGN_TABLE = {
    0: ["Continuous urban fabric", "Discontinuous urban fabric"],
    1: ["Industrial or commercial units"],
    2: ["Non-irrigated arable land", "Permanently irrigated land", "Rice fields"],
    3: [
        "Vineyards",
        "Fruit trees and berry plantations",
        "Olive groves",
        "Annual crops associated with permanent crops",
    ],
    4: ["Pastures"],
    5: ["Complex cultivation patterns"],
    6: ["Land principally occupied by agriculture, with significant areas of natural vegetation"],
    7: ["Agro-forestry areas"],
    8: ["Broad-leaved forest"],
    9: ["Coniferous forest"],
    10: ["Mixed forest"],
    11: ["Natural grassland", "Sparsely vegetated areas"],
    12: ["Moors and heathland", "Sclerophyllous vegetation"],
    13: ["Transitional woodland/shrub"],
    14: ["Beaches, dunes, sands"],
    15: ["Inland marshes", "Peatbogs"],
    16: ["Salt marshes", "Salines"],
    17: ["Water courses", "Water bodies"],
    18: ["Coastal lagoons", "Estuaries", "Sea and ocean"],
}
DESIGN_DROPPED = [
    "Road and rail networks and associated land",
    "Port areas",
    "Airports",
    "Mineral extraction sites",
    "Dump sites",
    "Construction sites",
    "Green urban areas",
    "Sport and leisure facilities",
    "Bare rock",
    "Burnt areas",
    "Intertidal flats",
]


def test_vocabulary_sizes() -> None:
    assert len(BEN19_NAMES) == 19
    assert len(CLC43_NAMES) == 43 == sum(len(v) for v in DESIGN_TABLE.values()) + len(DESIGN_DROPPED)


@pytest.mark.parametrize("cls", sorted(DESIGN_TABLE))
def test_each_corine_name_maps_to_its_class(cls: int) -> None:
    for name in DESIGN_TABLE[cls]:
        y = ben19_multi_hot([name], "test")
        assert y.dtype == np.float32 and y.shape == (19,)
        assert np.flatnonzero(y).tolist() == [cls], name


def test_dropped_names_map_to_nothing_and_mix() -> None:
    for name in DESIGN_DROPPED:
        assert not ben19_multi_hot([name], "test").any(), name
    y = ben19_multi_hot(["Airports", "Peatbogs", "Water bodies", "Inland marshes"], "test")
    assert np.flatnonzero(y).tolist() == [15, 17]


def test_19_class_names_are_accepted_too() -> None:  # v2 metadata carries the 19-class names
    y = ben19_multi_hot([BEN19_NAMES[3], BEN19_NAMES[18]], "test")
    assert np.flatnonzero(y).tolist() == [3, 18]


def test_unknown_name_is_an_error_naming_the_source() -> None:
    with pytest.raises(DatasetError, match=r"some/file\.json.*'Moon base'"):
        ben19_multi_hot(["Moon base"], "some/file.json")


def test_simplified_igbp(igbp_to_simplified: dict[int, int]) -> None:
    for code, cls in igbp_to_simplified.items():
        assert simplified_igbp_label(np.full((4, 4), code)) == cls, code
    layer = np.array([[1, 2, 12], [14, 12, 0], [17, 255, 17]])  # forest 2, crop 3, water 2; 0/255 ignored
    assert simplified_igbp_histogram(layer).tolist() == [2, 0, 0, 0, 0, 3, 0, 0, 0, 2]
    assert simplified_igbp_label(layer) == 5
    assert simplified_igbp_label(np.array([[1, 17]])) == 0  # tie -> lower id
    assert simplified_igbp_label(np.zeros((3, 3))) == -1
