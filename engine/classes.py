"""Mineral class sets: codes, names and display colours.

A class set is data (it travels in model cards and job configs), never a hard-coded
list in an algorithm. `LUMENSTONE` is the catalogue of the LumenStone data set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.errors import LodeInputError


@dataclass(frozen=True)
class MineralClass:
    code: int
    name: str
    color: tuple[int, int, int]


LUMENSTONE_CATALOGUE: dict[int, MineralClass] = {
    c.code: c
    for c in [
        MineralClass(0, "background", (40, 40, 40)),
        MineralClass(1, "chalcopyrite", (255, 200, 0)),
        MineralClass(2, "galena", (170, 170, 255)),
        MineralClass(3, "magnetite", (120, 60, 30)),
        MineralClass(4, "bornite", (200, 60, 160)),
        MineralClass(5, "pyrrhotite", (230, 120, 60)),
        MineralClass(6, "pyrite", (250, 250, 120)),
        MineralClass(7, "pentlandite", (150, 230, 90)),
        MineralClass(8, "sphalerite", (60, 140, 220)),
        MineralClass(9, "arsenopyrite", (240, 240, 240)),
        MineralClass(10, "hematite", (200, 30, 30)),
        MineralClass(11, "tennantite", (30, 200, 180)),
        MineralClass(12, "covellite", (30, 60, 200)),
        MineralClass(13, "marcasite", (180, 220, 200)),
        MineralClass(14, "native gold", (255, 140, 0)),
    ]
}


@dataclass(frozen=True)
class ClassSet:
    """An ordered set of classes; model output channel i is `classes[i]`."""

    classes: tuple[MineralClass, ...]
    name: str = field(default="custom")

    def __post_init__(self) -> None:
        codes = [c.code for c in self.classes]
        if len(set(codes)) != len(codes):
            raise ValueError(f"class set {self.name!r} has duplicate codes: {codes}")
        for c in self.classes:
            if not 0 <= c.code <= 255:
                raise ValueError(f"class code {c.code} out of range 0..255 in class set {self.name!r}")

    @classmethod
    def from_codes(
        cls,
        codes: Iterable[int],
        catalogue: dict[int, MineralClass] | None = None,
        name: str = "custom",
        source: str = "class set",
    ) -> ClassSet:
        catalogue = LUMENSTONE_CATALOGUE if catalogue is None else catalogue
        out = []
        for code in codes:
            if int(code) not in catalogue:
                raise LodeInputError(source, f"unknown class code {code} (known: {sorted(catalogue)})")
            out.append(catalogue[int(code)])
        return cls(tuple(out), name=name)

    @classmethod
    def from_dicts(
        cls,
        items: Sequence[dict],
        name: str = "custom",
        source: str = "class set",
        catalogue: dict[int, MineralClass] | None = None,
    ) -> ClassSet:
        """Build from [{code, name, color}], checking codes against the catalogue."""
        catalogue = LUMENSTONE_CATALOGUE if catalogue is None else catalogue
        out = []
        for item in items:
            try:
                code, nm, color = int(item["code"]), str(item["name"]), tuple(int(v) for v in item["color"])
            except (KeyError, TypeError, ValueError) as exc:
                raise LodeInputError(source, f"malformed class entry {item!r}: {exc}") from None
            if code not in catalogue:
                raise LodeInputError(source, f"unknown class code {code} (known: {sorted(catalogue)})")
            if len(color) != 3:
                raise LodeInputError(source, f"class {code} colour must be RGB, got {color}")
            out.append(MineralClass(code, nm, color))
        return cls(tuple(out), name=name)

    def to_dicts(self) -> list[dict]:
        return [{"code": c.code, "name": c.name, "color": list(c.color)} for c in self.classes]

    @property
    def codes(self) -> list[int]:
        return [c.code for c in self.classes]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def index_lut(self, ignore_index: int = 255) -> np.ndarray:
        """Lookup table code -> channel index (codes outside the set map to `ignore_index`)."""
        lut = np.full(256, ignore_index, dtype=np.uint8)
        for i, c in enumerate(self.classes):
            lut[c.code] = i
        return lut

    def code_lut(self) -> np.ndarray:
        """Lookup table channel index -> class code."""
        return np.array(self.codes, dtype=np.uint8)

    def palette(self) -> np.ndarray:
        """RGB colour per code (256×3, black for codes outside the set)."""
        pal = np.zeros((256, 3), dtype=np.uint8)
        for c in self.classes:
            pal[c.code] = c.color
        return pal


LUMENSTONE = ClassSet(tuple(LUMENSTONE_CATALOGUE.values()), name="lumenstone")
