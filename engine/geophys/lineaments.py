"""Lineament extraction from survey grids: the U-Net route and the classical baseline, and
their outputs (probability grid, GeoJSON / GeoPackage lines, rose diagram).

Classical baseline: reduction to the pole, upward continuation, total gradient amplitude,
Blakely-Simpson crest picking, then the same skeletonise-and-vectorise step as the U-Net.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import shapely
import xarray as xr
from scipy import ndimage

from engine.errors import LodeInputError
from engine.export.survey import write_vectors
from engine.geophys.blockwise import blockwise_tga_ridges
from engine.geophys.card import LineamentCard
from engine.geophys.grid import grid_spacing, grid_transform
from engine.geophys.ridges import ridge_mask
from engine.geophys.transforms import rtp_tga
from engine.geophys.vectorize import Lineament, mask_to_lineaments
from engine.io.atomic import atomic_path


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
    """Union of the NaN cells of a grid (in memory or dask-backed) as map-coordinate polygons (empty if none)."""
    from rasterio import features
    from rasterio.transform import Affine

    holes = np.asarray(~np.isfinite(da.data))
    if not holes.any():
        return shapely.Polygon()
    transform = Affine(*grid_transform(da))
    polys = [
        shapely.geometry.shape(g) for g, _ in features.shapes(holes.astype(np.uint8), mask=holes, transform=transform)
    ]
    return shapely.union_all(polys)


def _field_angles(da: xr.DataArray, inclination: float | None, declination: float | None) -> tuple[float, float]:
    inc = inclination if inclination is not None else da.attrs.get("inclination")
    dec = declination if declination is not None else da.attrs.get("declination")
    if inc is None or dec is None:
        raise LodeInputError(
            str(da.name or "grid"),
            "field inclination/declination unknown: pass them or store them in the grid attributes",
        )
    return float(inc), float(dec)


def classical_lineaments(
    da: xr.DataArray,
    inclination: float | None = None,
    declination: float | None = None,
    params: ClassicalParams = ClassicalParams(),
    block: int = 2048,
    work: str | Path | None = None,
) -> tuple[xr.DataArray, list[Lineament]]:
    """Baseline lines and the total gradient amplitude they were picked on.

    ``da`` may be in memory or dask-backed. A grid within one ``block``² block is filtered whole.
    A larger one runs blockwise (:mod:`engine.geophys.blockwise`): the TGA goes block by block
    into ``work/total_gradient_amplitude.zarr`` and comes back dask-backed by it (with no
    ``work``, through a temporary folder, and in memory), so memory follows the block, not the
    grid; only the crest mask and its vectorisation take the whole grid.
    """
    inc, dec = _field_angles(da, inclination, declination)
    spacing = grid_spacing(da)
    height = params.upward_cells * float(np.sqrt(spacing[0] * spacing[1])) if params.upward_cells > 0 else 0.0
    if da.shape[0] <= block and da.shape[1] <= block:
        values = np.asarray(da.values, dtype=np.float64)
        tga = rtp_tga(values, spacing, inc, dec, height)
        finite = np.isfinite(tga)
        level = float(np.quantile(tga[finite], params.quantile))
        mask = ridge_mask(np.where(finite, tga, -np.inf), params.min_directions, level)
        result = da.copy(data=tga.astype(np.float32))
    elif work is None:
        with tempfile.TemporaryDirectory(prefix="lode-tga-") as tmp:
            result, mask = blockwise_tga_ridges(
                da, spacing, inc, dec, height, params.quantile, params.min_directions, block, Path(tmp)
            )
            result = result.load()
    else:
        result, mask = blockwise_tga_ridges(
            da, spacing, inc, dec, height, params.quantile, params.min_directions, block, Path(work)
        )
    if params.bridge_cells > 0:
        mask = ndimage.binary_dilation(mask, iterations=params.bridge_cells)
    holes = np.asarray(~np.isfinite(da.data))
    if holes.any() and params.hole_margin_cells > 0:
        mask &= ~ndimage.binary_dilation(holes, iterations=params.hole_margin_cells)
    del holes
    lines = mask_to_lineaments(
        mask, da.northing.values, da.easting.values, params.min_length_cells, params.simplify_cells, hole_geometry(da)
    )
    return result.rename("total_gradient_amplitude"), lines


def unet_lineaments(
    da: xr.DataArray,
    model,
    card: LineamentCard,
    params: VectorParams | None = None,
    block: int = 2048,
    batch_size: int | None = None,
    stride: int | None = None,
) -> tuple[xr.DataArray, list[Lineament]]:
    """U-Net axis probability grid (same coordinates and attributes as ``da``) and its lines, in
    this process (the block stage run serially; :func:`unet_probability_zarr` runs it on Ray)."""
    from engine.geophys.predict import predict_grid

    params = params or VectorParams(threshold=card.threshold)
    prob = predict_grid(model, da.data, window=card.window, stride=stride, block=block, batch_size=batch_size)
    out = xr.DataArray(
        prob,
        dims=da.dims,
        coords=da.coords,
        name="axis_probability",
        attrs={**{k: v for k, v in da.attrs.items() if k == "crs"}, "units": "1"},
    )
    return out, probability_lines(out, da, params)


def probability_lines(prob: xr.DataArray, grid: xr.DataArray, params: VectorParams) -> list[Lineament]:
    """Lines of the cells at or above the threshold of a probability grid (in memory or dask-backed,
    thresholded chunk by chunk), cut out of the holes of ``grid``."""
    with np.errstate(invalid="ignore"):
        mask = np.asarray(prob.data >= params.threshold)
    return mask_to_lineaments(
        mask,
        grid.northing.values,
        grid.easting.values,
        params.min_length_cells,
        params.simplify_cells,
        hole_geometry(grid),
    )


def check_checkpoint(checkpoint: str | Path) -> LineamentCard:
    """A lineament checkpoint's model card (read without torch), once the whole checkpoint has
    passed :func:`engine.geophys.model.verify_checkpoint` in a child process."""
    from engine.geophys.card import WHAT, read_card
    from engine.io.torchfile import verify_in_child

    path = Path(checkpoint)
    if not path.is_file():
        raise LodeInputError(path, "no such model checkpoint")
    card = read_card(path)
    verify_in_child(path, "engine.geophys.model", what=WHAT)
    return card


def unet_probability_zarr(
    grid_path: str | Path,
    variable: str | None,
    checkpoint: str | Path,
    out: str | Path,
    block: int = 2048,
    batch_size: int | None = None,
    stride: int | None = None,
    executor: str = "ray",
    device: str = "auto",
) -> tuple[Path, dict]:
    """Run (or resume) U-Net inference over a grid on disk into ``OUT/axis_probability.zarr``.

    The grid opens lazily with block-aligned chunks; the raster runner runs one unit per
    ``block``² output block (read block + halo → windows and blend on the model actor → the
    block's own zarr chunk), recording each done unit in ``OUT/_inference`` (``manifest.json``,
    ``_status/``); a rerun skips them. Returns the zarr path and the inference manifest document.
    """
    import time

    from engine.geophys.grid import check_values, create_zarr_grid, halo_chunk, open_grid
    from engine.geophys.predict import GridRef, LineamentStage
    from engine.io.manifest import RunManifest
    from engine.raster.grid import block_grid
    from engine.raster.runner import RunOptions, run_stage
    from engine.raster.stage import units_of

    t0 = time.perf_counter()
    grid_path, out = Path(grid_path).resolve(), Path(out).resolve()
    card = check_checkpoint(checkpoint)
    window = card.window
    stride = stride or window // 2
    ref = GridRef(str(grid_path), variable, halo_chunk(block, window))
    da = open_grid(ref.path, variable, ref.chunk)
    h, w = da.shape
    manifest = RunManifest(out / "_inference")
    manifest.check_writable()
    fingerprint = {
        "grid": str(grid_path),
        "variable": variable,
        "shape": [h, w],
        "checkpoint": str(Path(checkpoint).resolve()),
        "window": window,
        "stride": stride,
        "block": block,
    }
    zpath = out / "axis_probability.zarr"
    fresh = manifest.begin("lineaments", {**fingerprint, "batch_size": batch_size, "executor": executor}, fingerprint)
    if fresh or not zpath.exists():
        check_values(da, grid_path)
        create_zarr_grid(
            zpath, da, "axis_probability", (block, block), {"units": "1", "long_name": "lineament axis probability"}
        )
    units = units_of("axis_probability", block_grid(h, w, block))
    stage = LineamentStage(
        ref,
        (h, w),
        (str(zpath), "axis_probability"),
        window,
        stride,
        batch_size,
        checkpoint=str(Path(checkpoint).resolve()),
    )
    started = False
    if executor == "ray":
        import ray

        from engine.runtime import init_ray

        started = not ray.is_initialized()
        init_ray()
    # model-bound: reading ahead more than a few blocks only holds memory; a CPU actor reads its own
    options = RunOptions(executor=executor, device=device, in_flight=4, read_in_compute=True)  # type: ignore[arg-type]
    run = run_stage(stage, units, manifest, options)
    if started:
        ray.shutdown()  # the vectoriser that follows runs without Ray's processes
    doc = manifest.finish({"inference_s": time.perf_counter() - t0}, [u.key for u in units], run.skipped)
    if doc["failed_sections"]:
        reason = next(iter(doc["failed_sections"].values()))
        raise LodeInputError(grid_path, f"lineament inference failed: {reason}")
    return zpath, doc


def write_lines(
    lines: Sequence[Lineament], path: str | Path, crs: str | None = None, properties: dict | None = None
) -> Path:
    """Write lines as a GeoJSON or GeoPackage layer (by suffix; ``length_m``, ``azimuth_deg`` per
    feature) with the CRS, atomically; ``properties`` go in a GeoJSON collection's ``properties``."""
    fields = {
        "id": np.arange(len(lines), dtype=np.int64),
        "length_m": np.array([round(ln.length_m, 3) for ln in lines], dtype=np.float64),
        "azimuth_deg": np.array([round(ln.azimuth_deg, 2) for ln in lines], dtype=np.float64),
    }
    return write_vectors(path, [ln.line for ln in lines], fields, crs, properties)


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


def write_rose(
    lines: Sequence[Lineament],
    path: str | Path,
    bin_deg: float = 10.0,
    title: str = "Lineament azimuths (length-weighted)",
) -> Path:
    """Axial, length-weighted rose diagram of line azimuths as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.projections.polar import PolarAxes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    az = np.array([ln.azimuth_deg for ln in lines])
    ln = np.array([ln.length_m for ln in lines])
    edges = np.arange(0, 360 + bin_deg, bin_deg)
    hist, _ = np.histogram(np.r_[az, az + 180.0] % 360, bins=edges, weights=np.r_[ln, ln])
    fig = plt.figure(figsize=(5, 5))
    ax = cast(PolarAxes, fig.add_subplot(projection="polar"))
    ax.set_theta_zero_location("N")
    ax.set_theta_direction(-1)
    ax.bar(np.deg2rad(edges[:-1] + bin_deg / 2), hist / 1000.0, width=np.deg2rad(bin_deg), edgecolor="k", linewidth=0.4)
    ax.set_title(f"{title}\n{len(lines)} lines, {ln.sum() / 1000:.1f} km (radius: km per bin)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
