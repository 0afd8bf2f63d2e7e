"""Modal mineralogy from grain tables and pixel tallies: per section and per collection.

Area fractions come from pixel counts (exact); weight % converts area (= volume for a
random section, Delesse) with mineral densities (recorded beside it); grain sizes are equivalent circle
diameters binned in size classes (default a √2 series); the association matrix is the
shared boundary length between phases; liberation is the share of a mineral's grain
area in grains that touch no other ore mineral.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.analyze.grains import Tally
from engine.classes import ClassSet
from engine.errors import LodeInputError

DEFAULT_DENSITIES: dict[str, float] = {
    "background": 2.65,
    "chalcopyrite": 4.19,
    "galena": 7.58,
    "magnetite": 5.17,
    "bornite": 5.07,
    "pyrrhotite": 4.61,
    "pyrite": 5.01,
    "pentlandite": 4.80,
    "sphalerite": 4.05,
    "arsenopyrite": 6.07,
    "hematite": 5.26,
    "tennantite": 4.62,
    "covellite": 4.68,
    "marcasite": 4.89,
    "native gold": 19.3,
}
"""Densities in g/cm³ by class name (handbook values; background is taken as quartz-like gangue)."""


@dataclass(frozen=True)
class Measured:
    """One scope's measurements in a common unit (``um`` when pixel sizes are known, else ``px``)."""

    grains: pd.DataFrame  # needs class_code, area (unit²), ecd (unit), touches_ore
    class_px: np.ndarray  # (256,) pixel counts
    class_area: np.ndarray  # (256,) area in unit²
    boundary: np.ndarray  # (256, 256) shared boundary length in unit
    unit: str


def measured_section(grains: pd.DataFrame, tally: Tally, pixel_size_um: float | None) -> Measured:
    px = pixel_size_um or 1.0
    unit = "um" if pixel_size_um else "px"
    g = pd.DataFrame(
        {
            "class_code": grains["class_code"].to_numpy(),
            "area": grains["area_px"].to_numpy() * px * px,
            "ecd": grains["ecd_px"].to_numpy() * px,
            "touches_ore": grains["touches_ore"].to_numpy(),
        }
    )
    return Measured(g, tally.class_px.copy(), tally.class_px * px * px, tally.boundary_length_px() * px, unit)


def combine(parts: Sequence[Measured]) -> Measured:
    """A collection's measurements (all sections in the same unit)."""
    if not parts:
        raise ValueError("nothing to combine")
    if len({p.unit for p in parts}) > 1:
        raise LodeInputError("collection", "sections mix known and unknown pixel sizes; give --pixel-size-um")
    return Measured(
        pd.concat([p.grains for p in parts], ignore_index=True),
        np.sum([p.class_px for p in parts], axis=0),
        np.sum([p.class_area for p in parts], axis=0),
        np.sum([p.boundary for p in parts], axis=0),
        parts[0].unit,
    )


def sqrt2_edges(values: np.ndarray) -> np.ndarray:
    """√2-series class edges 2**(k/2) spanning ``values`` (positive sizes)."""
    v = np.asarray(values, np.float64)
    v = v[v > 0]
    if not len(v):
        return np.array([1.0, math.sqrt(2.0)])
    k0 = math.floor(2 * math.log2(v.min()) + 1e-9)
    k1 = math.floor(2 * math.log2(v.max()) + 1e-9) + 1
    return 2.0 ** (np.arange(k0, k1 + 1) / 2.0)


def load_densities(path: str | Path | None) -> dict[str, float]:
    """Default densities updated from a JSON file ``{"mineral name": g_per_cm3, ...}``."""
    out = dict(DEFAULT_DENSITIES)
    if path is None:
        return out
    try:
        extra = json.loads(Path(path).read_text())
        out.update({str(k): float(v) for k, v in extra.items()})
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise LodeInputError(path, f"cannot read densities as a JSON object of name -> g/cm3: {exc}") from None
    for k, v in out.items():
        if not (v > 0 and math.isfinite(v)):
            raise LodeInputError(path, f"density of {k!r} must be positive, got {v}")
    return out


def statistics_rows(
    m: Measured,
    classes: ClassSet,
    grain_codes: Sequence[int],
    size_edges: np.ndarray,
    densities: Mapping[str, float],
    scope: str,
    section: str | None,
) -> pd.DataFrame:
    """Every statistic of one scope as rows of ``STATISTICS_SCHEMA``."""
    rows: list[dict] = []
    names = {c.code: c.name for c in classes.classes}

    def add(
        stat: str,
        code: int,
        value: float,
        unit: str | None = None,
        other: int | None = None,
        lo: float | None = None,
        hi: float | None = None,
    ) -> None:
        rows.append(
            {
                "scope": scope,
                "section": section,
                "statistic": stat,
                "class_code": code,
                "class_name": names.get(code, str(code)),
                "other_code": other,
                "other_name": None if other is None else names.get(other, str(other)),
                "size_lo": lo,
                "size_hi": hi,
                "unit": unit,
                "value": float(value),
            }
        )

    codes = classes.codes
    total = float(sum(m.class_area[c] for c in codes))  # pixels of no class (void) are not area
    for c in codes:
        add("area_px", c, m.class_px[c], "px")
    for c in codes:
        add("area_fraction", c, m.class_area[c] / total if total else 0.0, "1")
    mass = {c: m.class_area[c] * densities[names[c]] for c in codes if names[c] in densities}
    msum = sum(mass.values())
    for c, v in mass.items():
        add("weight_percent", c, 100.0 * v / msum if msum else 0.0, "%")
    for c in mass:
        add("density", c, densities[names[c]], "g/cm3")

    g = m.grains
    for c in grain_codes:
        sel = g[g["class_code"] == c]
        add("grain_count", c, len(sel), "count")
        if len(sel):
            add("mean_ecd", c, sel["ecd"].mean(), m.unit)
        counts, _ = np.histogram(sel["ecd"], bins=size_edges)
        areas, _ = np.histogram(sel["ecd"], bins=size_edges, weights=sel["area"])
        garea = float(sel["area"].sum())
        for k in range(len(size_edges) - 1):
            lo, hi = float(size_edges[k]), float(size_edges[k + 1])
            add("size_count", c, counts[k], m.unit, lo=lo, hi=hi)
            add("size_area_fraction", c, areas[k] / garea if garea else 0.0, m.unit, lo=lo, hi=hi)
        if garea:
            add("liberation", c, float(sel.loc[~sel["touches_ore"], "area"].sum()) / garea, "1")
    for i, a in enumerate(codes):
        for b in codes[i + 1 :]:
            lo_c, hi_c = min(a, b), max(a, b)
            add("boundary_length", lo_c, m.boundary[lo_c, hi_c], m.unit, other=hi_c)
    return pd.DataFrame(rows)


def statistics_table(
    sections: Sequence[tuple[str, Measured]],
    classes: ClassSet,
    grain_codes: Sequence[int],
    densities: Mapping[str, float] | None = None,
    size_edges: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Statistics of every section and of the whole collection (``scope == "collection"``)."""
    from schemas.tables import STATISTICS_SCHEMA

    densities = DEFAULT_DENSITIES if densities is None else densities
    parts = [m for _, m in sections]
    collection = combine(parts)
    edges = (
        np.asarray(size_edges, np.float64)
        if size_edges is not None
        else sqrt2_edges(collection.grains["ecd"].to_numpy())
    )
    if len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise LodeInputError("size classes", f"edges must be at least two increasing values, got {list(edges)}")
    frames = [statistics_rows(m, classes, grain_codes, edges, densities, "section", name) for name, m in sections]
    frames.append(statistics_rows(collection, classes, grain_codes, edges, densities, "collection", None))
    df = pd.concat(frames, ignore_index=True)
    for col in ("other_code",):
        df[col] = df[col].astype("Int16")
    return df[[f.name for f in STATISTICS_SCHEMA]]
