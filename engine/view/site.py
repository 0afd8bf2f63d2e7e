"""What ``lode view`` shows of an output folder: the sections of an OME-Zarr store, or the grids,
lines and points of a survey output (lineaments, prospectivity).

The page reads section pyramids straight from the store's chunk files; this module only
describes them (:meth:`Site.manifest`) and answers what needs the tables: the grain under a
pixel, a survey grid rendered with a colour map, lines and points in grid pixel coordinates.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import LodeInputError
from engine.io import fs

STORE_NAMES = ("lode.ome.zarr",)
GRID_NAMES = (
    "axis_probability.zarr",
    "total_gradient_amplitude.tif",
    "total_gradient_amplitude.nc",
    "total_gradient_amplitude.zarr",
    "axis_probability.tif",
)


@dataclass
class SurveyLayer:
    """A north-up grid ``values`` ``(rows, cols)`` with its lines and points in pixel coordinates
    (x right, y down, pixel edges at integers)."""

    name: str
    values: np.ndarray
    crs: str | None
    cell_size: float
    lines: list[list[tuple[float, float]]] = field(default_factory=list)
    points: list[dict] = field(default_factory=list)
    colormap: str = "viridis"

    def png(self) -> bytes:
        import matplotlib

        v = self.values.astype(np.float64)
        finite = np.isfinite(v)
        lo, hi = np.percentile(v[finite], [2, 98]) if finite.any() else (0.0, 1.0)
        norm = np.clip((v - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        rgba = (matplotlib.colormaps[self.colormap](norm) * 255).astype(np.uint8)
        rgba[~finite, 3] = 0
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
        return buf.getvalue()

    def describe(self) -> dict:
        h, w = self.values.shape
        return {
            "name": self.name,
            "width": w,
            "height": h,
            "crs": self.crs,
            "cell_size": self.cell_size,
            "colormap": self.colormap,
            "lines": self.lines,
            "points": self.points,
        }


def _find_store(out: str) -> str | None:
    if fs.exists(fs.join(out, "zarr.json")):
        from engine.io.ome import image_groups, open_store

        return out if image_groups(open_store(out)) else None
    for name in STORE_NAMES:
        if fs.exists(fs.join(out, name, "zarr.json")):
            return fs.join(out, name)
    return None


class Site:
    """The viewable content of ``out``: a section store (``kind == "sections"``) or survey layers."""

    def __init__(self, out: str | Path):
        text = str(out)
        self.out = text if fs.is_uri(text) else str(Path(fs.local(text)).resolve())
        if not fs.exists(self.out):
            raise LodeInputError(text, "no such output folder or store")
        self.store = _find_store(self.out)
        self.layers: dict[str, SurveyLayer] = {}
        self._grains: pd.DataFrame | None = None
        self._labels: dict[str, Any] = {}
        self._manifest: dict | None = None
        if self.store is None:
            self.layers = survey_layers(Path(fs.local(self.out)))
            if not self.layers:
                raise LodeInputError(text, "nothing to view: no OME-Zarr sections, lineaments or prospectivity maps")
        self.kind = "sections" if self.store else "survey"

    def file(self, rel: str) -> str:
        """Location of a file inside the store; refuses paths that leave it."""
        parts = [p for p in rel.split("/") if p]
        if self.store is None or any(p in ("..", ".") for p in parts):
            raise LodeInputError(rel, "not a file of the viewed store")
        return fs.join(self.store, *parts)

    def manifest(self) -> dict:
        """What the page shows, computed once (a store being viewed is not rewritten)."""
        if self._manifest is None:
            self._manifest = self._describe()
        return self._manifest

    def _describe(self) -> dict:
        if self.store is None:
            return {
                "kind": "survey",
                "title": fs.name(self.out),
                "layers": [v.describe() for v in self.layers.values()],
            }
        from engine.view.sections import describe_sections

        return {
            "kind": "sections",
            "title": fs.name(self.out),
            "sections": describe_sections(self.store, self._statistics()),
        }

    def _table(self, name: str) -> str | None:
        assert self.store is not None
        for base in (self.out, fs.parent(self.store)):
            path = fs.join(base, name)
            if fs.exists(path):
                return path
        return None

    def _statistics(self) -> pd.DataFrame | None:
        path = self._table("statistics.parquet")
        return pd.read_parquet(path) if path else None

    def grains(self) -> pd.DataFrame | None:
        if self._grains is None and self.store is not None:
            path = self._table("grains.parquet")
            self._grains = pd.read_parquet(path) if path else None
        return self._grains

    def grain_at(self, section: str, y: int, x: int) -> dict | None:
        """The ``grains.parquet`` row of the grain under pixel ``(y, x)`` of ``section`` (with its
        neighbouring minerals), or None on no grain / no table."""
        from engine.export.grains import bbox_of, grain_mask, neighbour_codes
        from engine.io.ome import VOID, open_store

        grains = self.grains()
        if grains is None or self.store is None:
            return None
        if section not in self._labels:
            self._labels[section] = open_store(self.store)[f"{section}/labels/minerals/0"]
        labels = self._labels[section]
        H, W = labels.shape
        if not (0 <= y < H and 0 <= x < W):
            return None
        code = int(labels[y, x])
        g = grains[
            (grains.section == section)
            & (grains.class_code == code)
            & (grains.bbox_y0 <= y)
            & (grains.bbox_y1 > y)
            & (grains.bbox_x0 <= x)
            & (grains.bbox_x1 > x)
        ]
        names = dict(zip(grains.class_code.astype(int), grains.class_name))
        for row in g.itertuples(index=False):
            y0, x0, y1, x1 = bbox_of(row)
            mask = grain_mask(np.asarray(labels[y0:y1, x0:x1]), row, at=(y - y0, x - x0))
            if mask is not None:
                out = {
                    k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in row._asdict().items()
                }
                codes = neighbour_codes(labels, row, mask, VOID)
                out["neighbours"] = [names.get(c, str(c)) for c in codes]
                return out
        return None


def _grid_layer(path: Path, name: str) -> SurveyLayer:
    from engine.geophys.grid import open_grid

    da = open_grid(path)
    da = da.sortby("northing", ascending=False)
    cell = float(abs(da.easting.values[1] - da.easting.values[0]))
    return SurveyLayer(name, np.asarray(da.values, np.float32), da.attrs.get("crs"), cell)


def _to_pixels(layer_grid: tuple[float, float, float], x: float, y: float) -> tuple[float, float]:
    west, north, cell = layer_grid
    return (round((x - west) / cell, 3), round((north - y) / cell, 3))


def _lines(path: Path, frame: tuple[float, float, float]) -> list[list[tuple[float, float]]]:
    import shapely.geometry

    out = []
    for f in json.loads(path.read_text()).get("features", []):
        geom = shapely.geometry.shape(f["geometry"])
        for part in getattr(geom, "geoms", [geom]):
            out.append([_to_pixels(frame, float(px), float(py)) for px, py in part.coords])
    return out


def survey_layers(out: Path) -> dict[str, SurveyLayer]:
    """Lineament outputs (probability or gradient grid + ``lineaments.geojson``) and prospectivity
    maps (``map_*.zarr`` score stores, with ``deposits.geojson`` when present) in ``out``."""
    layers: dict[str, SurveyLayer] = {}
    grid = next((out / n for n in GRID_NAMES if (out / n).exists()), None)
    if grid is not None:
        from engine.geophys.grid import open_grid

        da = open_grid(grid)
        cell = float(abs(da.easting.values[1] - da.easting.values[0]))
        frame = (float(da.easting.min()) - cell / 2, float(da.northing.max()) + cell / 2, cell)
        layer = _grid_layer(grid, grid.name.split(".")[0])
        if (out / "lineaments.geojson").exists():
            layer.lines = _lines(out / "lineaments.geojson", frame)
        layers[layer.name] = layer
    maps = sorted(out.glob("map_*.zarr")) or ([out] if (out / "zarr.json").exists() else [])
    for m in maps:
        import zarr

        from engine.prospect.score import read_score

        root: Any = zarr.open_group(str(m), mode="r")
        if "grid" not in root.attrs:
            continue
        g = root.attrs["grid"]
        frame = (float(g["west"]), float(g["north"]), float(g["cell_size"]))
        layer = SurveyLayer(
            f"prospectivity ({root.attrs.get('method', m.stem)})",
            read_score(m, partial=True),
            g.get("crs"),
            frame[2],
            colormap="inferno",
        )
        deposits = next((p for p in (out / "deposits.geojson", out.parent / "deposits.geojson") if p.exists()), None)
        if deposits is not None:
            for f in json.loads(deposits.read_text()).get("features", []):
                px, py = _to_pixels(frame, *f["geometry"]["coordinates"][:2])
                layer.points.append(
                    {
                        "x": px,
                        "y": py,
                        **{k: v for k, v in f.get("properties", {}).items() if isinstance(v, (str, int, float))},
                    }
                )
        layers[layer.name] = layer
    return layers
