"""Lineament extraction from survey grids: the U-Net route and the classical baseline, and
their outputs (probability grid, GeoJSON lines, rose diagram).

Classical baseline: reduction to the pole, upward continuation, total gradient amplitude,
Blakely-Simpson crest picking, then the same skeletonise-and-vectorise step as the U-Net.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
import xarray as xr
from scipy import ndimage

from engine.errors import LodeInputError
from engine.geophys.grid import grid_spacing
from engine.geophys.ridges import ridge_mask
from engine.geophys.transforms import reduce_to_pole, total_gradient_amplitude, upward_continue
from engine.geophys.vectorize import Lineament, mask_to_lineaments


@dataclass(frozen=True)
class ClassicalParams:
    """Baseline settings; defaults tuned on training-distribution surveys (never the held-out seeds)."""

    upward_cells: float = 0.5
    min_directions: int = 2
    quantile: float = 0.8
    min_length_cells: float = 10.0
    simplify_cells: float = 1.0
    hole_margin_cells: int = 2
    bridge_cells: int = 1


@dataclass(frozen=True)
class VectorParams:
    threshold: float = 0.5
    min_length_cells: float = 10.0
    simplify_cells: float = 1.0


def hole_geometry(da: xr.DataArray) -> shapely.Geometry:
    """Union of the NaN cells of a grid as map-coordinate polygons (empty if none)."""
    from rasterio import features
    from rasterio.transform import Affine

    holes = ~np.isfinite(da.values)
    if not holes.any():
        return shapely.Polygon()
    dn, de = grid_spacing(da)
    n0, e0 = float(da.northing[0]), float(da.easting[0])
    transform = Affine(de, 0, e0 - de / 2, 0, dn, n0 - dn / 2)
    polys = [shapely.geometry.shape(g) for g, _ in features.shapes(holes.astype(np.uint8), mask=holes, transform=transform)]
    return shapely.union_all(polys)


def _field_angles(da: xr.DataArray, inclination: float | None, declination: float | None) -> tuple[float, float]:
    inc = inclination if inclination is not None else da.attrs.get("inclination")
    dec = declination if declination is not None else da.attrs.get("declination")
    if inc is None or dec is None:
        raise LodeInputError(da.name or "grid", "field inclination/declination unknown: pass them or store them in the grid attributes")
    return float(inc), float(dec)


def classical_lineaments(
    da: xr.DataArray,
    inclination: float | None = None,
    declination: float | None = None,
    params: ClassicalParams = ClassicalParams(),
) -> tuple[xr.DataArray, list[Lineament]]:
    """Baseline lines and the total gradient amplitude they were picked on."""
    inc, dec = _field_angles(da, inclination, declination)
    spacing = grid_spacing(da)
    values = da.values
    rtp = reduce_to_pole(values, spacing, inc, dec)
    if params.upward_cells > 0:
        rtp = upward_continue(rtp, spacing, params.upward_cells * float(np.sqrt(spacing[0] * spacing[1])))
    tga = total_gradient_amplitude(rtp, spacing)
    finite = np.isfinite(tga)
    level = float(np.quantile(tga[finite], params.quantile))
    mask = ridge_mask(np.where(finite, tga, -np.inf), params.min_directions, level)
    if params.bridge_cells > 0:
        mask = ndimage.binary_dilation(mask, iterations=params.bridge_cells)
    holes = ~np.isfinite(values)
    if holes.any() and params.hole_margin_cells > 0:
        mask &= ~ndimage.binary_dilation(holes, iterations=params.hole_margin_cells)
    lines = mask_to_lineaments(mask, da.northing.values, da.easting.values, params.min_length_cells, params.simplify_cells, hole_geometry(da))
    return da.copy(data=tga.astype(np.float32)).rename("total_gradient_amplitude"), lines


def unet_lineaments(
    da: xr.DataArray,
    model,
    card: dict,
    params: VectorParams | None = None,
    block: int = 2048,
    batch_size: int = 16,
    stride: int | None = None,
    progress=None,
) -> tuple[xr.DataArray, list[Lineament]]:
    """U-Net axis probability grid (same coordinates and attributes as ``da``) and its lines
    (``progress(blocks_done, blocks_total)`` is called after each inference block)."""
    from engine.geophys.predict import predict_grid

    params = params or VectorParams(threshold=float(card.get("threshold", 0.5)))
    prob = predict_grid(model, da.values, window=int(card["window"]), stride=stride, block=block, batch_size=batch_size, progress=progress)
    out = xr.DataArray(prob, dims=da.dims, coords=da.coords, name="axis_probability", attrs={**{k: v for k, v in da.attrs.items() if k == "crs"}, "units": "1"})
    with np.errstate(invalid="ignore"):
        mask = prob >= params.threshold
    lines = mask_to_lineaments(mask, da.northing.values, da.easting.values, params.min_length_cells, params.simplify_cells, hole_geometry(da))
    return out, lines


def write_geojson(lines: Sequence[Lineament], path: str | Path, crs: str | None = None, properties: dict | None = None) -> Path:
    """Write lines as a GeoJSON FeatureCollection (``length_m``, ``azimuth_deg`` per feature), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "id": i, "geometry": shapely.geometry.mapping(ln.line), "properties": {"length_m": round(ln.length_m, 3), "azimuth_deg": round(ln.azimuth_deg, 2)}}
            for i, ln in enumerate(lines)
        ],
    }
    if properties:
        doc["properties"] = properties
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
    return path


def read_geojson_lines(path: str | Path) -> list[shapely.Geometry]:
    """Line geometries of a GeoJSON FeatureCollection (or bare geometry list)."""
    path = Path(path)
    if not path.is_file():
        raise LodeInputError(path, "no such GeoJSON file")
    try:
        doc = json.loads(path.read_text())
        feats = doc["features"] if doc.get("type") == "FeatureCollection" else [doc]
        geoms = [shapely.geometry.shape(f["geometry"] if "geometry" in f else f) for f in feats]
    except Exception as exc:  # noqa: BLE001
        raise LodeInputError(path, f"not a GeoJSON line collection: {exc}") from exc
    bad = [g.geom_type for g in geoms if g.geom_type not in ("LineString", "MultiLineString")]
    if bad:
        raise LodeInputError(path, f"expected line geometries, found {sorted(set(bad))}")
    return geoms


def write_rose(lines: Sequence[Lineament], path: str | Path, bin_deg: float = 10.0, title: str = "Lineament azimuths (length-weighted)") -> Path:
    """Axial, length-weighted rose diagram of line azimuths as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    az = np.array([ln.azimuth_deg for ln in lines])
    ln = np.array([ln.length_m for ln in lines])
    edges = np.arange(0, 360 + bin_deg, bin_deg)
    hist, _ = np.histogram(np.r_[az, az + 180.0] % 360, bins=edges, weights=np.r_[ln, ln])
    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(projection="polar")
    ax.set_theta_zero_location("N")
    ax.set_theta_direction(-1)
    ax.bar(np.deg2rad(edges[:-1] + bin_deg / 2), hist / 1000.0, width=np.deg2rad(bin_deg), edgecolor="k", linewidth=0.4)
    ax.set_title(f"{title}\n{len(lines)} lines, {ln.sum() / 1000:.1f} km (radius: km per bin)", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
