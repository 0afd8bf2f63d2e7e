"""Reflected-light appearance of minerals and the mineral associations of LumenStone sets.

Colours are sRGB means under a standard ore-microscope capture. Some pairs are
deliberately close (pyrite / marcasite / arsenopyrite, pyrrhotite / pentlandite,
magnetite / tennantite / hematite) as they are under the microscope.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REFLECTANCE_RGB: dict[int, tuple[int, int, int]] = {
    0: (46, 46, 52),
    1: (206, 178, 78),
    2: (202, 203, 208),
    3: (122, 118, 112),
    4: (178, 118, 96),
    5: (200, 172, 138),
    6: (226, 214, 158),
    7: (208, 190, 146),
    8: (104, 103, 100),
    9: (226, 221, 206),
    10: (162, 162, 174),
    11: (148, 154, 148),
    12: (78, 108, 172),
    13: (222, 214, 178),
    14: (242, 198, 78),
}

# Table 1 of Korshunov et al. (2025): area shares of LumenStone classes, in percent.
PAPER_SHARES: dict[int, float] = {
    0: 37.6,
    6: 14.8,
    8: 14.3,
    5: 8.9,
    1: 6.0,
    2: 5.0,
    9: 3.9,
    4: 2.5,
    7: 2.4,
    11: 2.1,
    12: 1.8,
    3: 0.5,
}

# Anisotropic minerals (brightness changes under crossed polars with stage rotation).
ANISOTROPIC = frozenset({5, 9, 12, 13, 10})


@dataclass(frozen=True)
class Association:
    """A mineral association: target area share per class code and relative grain sizes.

    ``shares`` include the non-ore background (code 0); ``size`` scales a class's mean
    grain diameter (rare minerals come as small grains).
    """

    name: str
    shares: dict[int, float]
    size: dict[int, float] = field(default_factory=dict)

    @property
    def codes(self) -> list[int]:
        return sorted(self.shares)


ASSOCIATIONS: dict[str, Association] = {
    "S1": Association(
        "S1 polymetallic",
        {0: 37.6, 8: 22.0, 2: 12.0, 1: 9.0, 6: 9.0, 4: 5.5, 11: 4.9},
        {4: 0.6, 11: 0.55, 1: 0.8},
    ),
    "S2": Association(
        "S2 Cu-Ni sulphide",
        {0: 37.6, 5: 32.0, 7: 11.0, 1: 12.4, 6: 5.0, 3: 2.0},
        {7: 0.7, 3: 0.45},
    ),
    "S3": Association(
        "S3 anisotropic",
        {0: 40.0, 6: 22.0, 9: 16.0, 12: 8.0, 13: 8.0, 5: 6.0},
        {12: 0.7, 13: 0.8},
    ),
    # Table 1 split into an S1-like and an S2-like half (each mineral only in its half's images, at
    # twice its Table-1 share, so that an even mix of the two reproduces the collection's imbalance).
    "T1-S1": Association(
        "Table 1, S1-like half",
        {0: 37.6, 8: 28.6, 2: 10.0, 1: 6.0, 4: 5.0, 11: 4.2, 12: 3.6},
        {4: 0.6, 11: 0.55, 12: 0.5},
    ),
    "T1-S2": Association(
        "Table 1, S2-like half",
        {0: 37.6, 6: 29.6, 5: 17.8, 9: 7.8, 1: 6.0, 7: 4.8, 3: 1.0},
        {3: 0.35, 7: 0.6, 9: 0.8},
    ),
    "paper": Association(
        "Table 1 mixture",
        dict(PAPER_SHARES),
        {3: 0.35, 12: 0.5, 11: 0.55, 7: 0.6, 4: 0.6, 9: 0.8},
    ),
}
