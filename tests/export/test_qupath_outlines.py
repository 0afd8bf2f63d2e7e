"""QuPath grain outlines traced for a whole section equal, byte for byte, those the per-grain
algorithm drew (frozen below as it stood before the section-wide tracing)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shapely
import shapely.geometry
from rasterio.features import shapes
from rasterio.transform import Affine
from scipy import ndimage as ndi
from skimage.measure import label as sk_label

from engine.analyze.grains import finish_grain_table, grain_lut_for, measure_labels
from engine.classes import LUMENSTONE
from engine.export.qupath import MEASUREMENTS, grain_features

NAMES = {c.code: c.name for c in LUMENSTONE.classes}
COLOURS = {c.code: tuple(c.color) for c in LUMENSTONE.classes}


# --- the per-grain algorithm, frozen -------------------------------------------------------------


def _reference_mask(crop: np.ndarray, row: Any) -> np.ndarray | None:
    code, area = int(row.class_code), int(row.area_px)
    h, w = crop.shape
    for connectivity in (2, 1):
        comps = sk_label(crop == code, connectivity=connectivity)
        for i in list(np.unique(comps[comps > 0])):
            if i == 0:
                continue
            mask = comps == i
            if int(mask.sum()) != area:
                continue
            rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
            if rows[0] and rows[-1] and cols[0] and cols[-1] and h == len(rows) and w == len(cols):
                return mask
    return None


def _reference_outline(mask: np.ndarray, y0: int, x0: int) -> dict:
    parts = [
        shapely.geometry.shape(g)
        for g, v in shapes(mask.astype(np.uint8), mask=mask, connectivity=8, transform=Affine.translation(x0, y0))
        if v == 1
    ]
    geom = shapely.make_valid(shapely.unary_union(parts))
    if geom.geom_type == "GeometryCollection":
        geom = shapely.unary_union([g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")])
    return dict(shapely.geometry.mapping(geom))


def _number(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def _reference_features(labels: np.ndarray, grains: pd.DataFrame, colours: dict) -> list[dict]:
    out = []
    for row in grains.itertuples(index=False):
        y0, x0, y1, x1 = int(row.bbox_y0), int(row.bbox_x0), int(row.bbox_y1), int(row.bbox_x1)
        mask = _reference_mask(labels[y0:y1, x0:x1], row)
        if mask is None:
            continue
        code = int(row.class_code)
        out.append(
            {
                "type": "Feature",
                "id": f"{row.section}-{int(row.grain_id)}",
                "geometry": _reference_outline(mask, y0, x0),
                "properties": {
                    "objectType": "detection",
                    "name": f"grain {int(row.grain_id)}",
                    "classification": {"name": str(row.class_name), "color": list(colours.get(code, (128, 128, 128)))},
                    "isLocked": False,
                    "measurements": {k: v for k in MEASUREMENTS if (v := _number(getattr(row, k, None))) is not None},
                    "grain_id": int(row.grain_id),
                    "class_code": code,
                },
            }
        )
    return out


# --- a section with every arrangement of grains ---------------------------------------------------


def _section(seed: int) -> np.ndarray:
    """(120, 160) uint8 labels: hand-placed grains (holes, grains in holes, corner contacts, pinches,
    classes side by side, grains on the border), a noise field and a matrix grain with many holes."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((120, 160), np.uint8)
    lab[0:6, 0:9] = 1  # on the image corner
    lab[0:4, 40:52] = 2  # on the top edge
    lab[110:120, 150:160] = 3  # on the opposite corner
    lab[60:75, 0:3] = 1  # on the left edge
    lab[8:26, 8:30] = 1  # ring grain ...
    lab[11:23, 11:27] = 0  # ... with a hole ...
    lab[13:18, 13:18] = 2  # ... holding a grain of the other class ...
    lab[19:21, 21:25] = 1  # ... and one of its own class
    lab[15, 24] = 3
    lab[8:14, 34:40] = 1  # two grains touching only at a corner
    lab[14:20, 40:46] = 1
    lab[8:14, 48:54] = 2  # and one touching a grain of another class at a corner
    lab[14:20, 54:60] = 1
    lab[24:36, 34:50] = 1  # a grain whose hole touches its outline at a corner
    lab[27:31, 37:41] = 0
    lab[31, 41] = 0
    lab[36, 50] = 0
    lab[23, 33] = 0
    lab[24:36, 54:70] = 2  # a grain with two holes touching each other at a corner
    lab[27:30, 57:60] = 0
    lab[30:33, 60:63] = 0
    lab[8:20, 64:72] = 1  # two classes side by side
    lab[8:20, 72:80] = 2
    lab[12:16, 80:86] = 3
    lab[40:44, 4:8] = 2  # a grain pinched onto itself: an L whose ends touch at a corner
    lab[44:48, 8:12] = 2
    lab[40:42, 8:12] = 2
    lab[42:44, 10:12] = 2
    lab[44, 7] = 0
    noise = rng.choice(np.array([0, 1, 2, 3], np.uint8), size=(40, 70), p=[0.4, 0.3, 0.2, 0.1])
    lab[50:90, 20:90] = noise  # every contact, nesting and pinch
    matrix = np.full((50, 60), 3, np.uint8)  # a matrix grain with holes, some touching
    holes = rng.random((50, 60)) < 0.12
    matrix[holes] = rng.choice(np.array([0, 1, 2], np.uint8), size=int(holes.sum()))
    matrix[:, 0] = matrix[0, :] = 3
    lab[50:100, 95:155] = matrix
    smooth = ndi.median_filter(rng.integers(0, 4, (20, 60)).astype(np.uint8), 3)
    lab[100:120, 20:80] = smooth
    return lab


def _table(lab: np.ndarray, connectivity: int) -> pd.DataFrame:
    df, _ = measure_labels(lab, lab.shape, (40, 48), grain_lut_for(range(4), [0]), connectivity)
    return finish_grain_table(df, "s1", NAMES, 0.5)


def _json(features: list[dict]) -> str:
    return json.dumps({"type": "FeatureCollection", "features": features})


@pytest.mark.parametrize("seed", [3, 17])
@pytest.mark.parametrize("connectivity", [2, 1], ids=["8-connected", "4-connected"])
def test_outlines_equal_the_per_grain_algorithm(connectivity, seed):
    lab = _section(seed)
    grains = _table(lab, connectivity)
    assert len(grains) > 200
    want = _reference_features(lab, grains, COLOURS)
    assert len(want) == len(grains)
    got = list(grain_features(lab, grains, COLOURS))
    assert _json(got) == _json(want)
    kinds = {f["geometry"]["type"] for f in got}
    assert kinds == ({"Polygon", "MultiPolygon"} if connectivity == 2 else {"Polygon"})  # corner contacts split
    assert any(len(f["geometry"]["coordinates"]) > 1 for f in got if f["geometry"]["type"] == "Polygon")


def test_rows_the_labels_no_longer_hold_are_drawn_as_before():
    """Labels edited after the table: rows whose grain changed fall back to the per-grain search
    (which may find another component, or none)."""
    lab = _section(5)
    grains = _table(lab, 2)
    edited = lab.copy()
    rng = np.random.default_rng(1)
    ys, xs = rng.integers(50, 90, 60), rng.integers(20, 90, 60)
    edited[ys, xs] = rng.integers(0, 4, 60).astype(np.uint8)
    edited[8:26, 8:30][edited[8:26, 8:30] == 1] = 2
    want = _reference_features(edited, grains, COLOURS)
    assert 0 < len(want) < len(grains)
    assert _json(list(grain_features(edited, grains, COLOURS))) == _json(want)


@pytest.mark.parametrize("dtype", [np.int16, np.int64])
def test_label_images_of_other_integer_types(dtype):
    """int16 labels are traced like uint8 ones; int64 ones, which GDAL does not take, grain by grain."""
    lab = _section(11)
    grains = _table(lab, 2)
    wide = lab.astype(dtype)
    assert _json(list(grain_features(wide, grains, COLOURS))) == _json(_reference_features(wide, grains, COLOURS))


def test_section_with_no_grains():
    lab = np.zeros((20, 30), np.uint8)
    grains = _table(lab, 2)
    assert list(grain_features(lab, grains, COLOURS)) == []
