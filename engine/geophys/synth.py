"""Synthetic magnetic surveys of dyke swarms with exact axis truth.

A survey is the total-field anomaly (nT) of thin dipping dykes (in swarms of common strike,
broken into offset segments), distractor bodies (plugs and buried contacts), a regional trend
and white noise, under one field geometry. The truth is the set of dyke axes (the centre line
of each segment's top) as polylines in grid cells, and a raster of those axes widened into a
tolerance band.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import shapely
from scipy import ndimage

from engine.geophys.forward import FourierForward


@dataclass(frozen=True)
class SurveyConfig:
    """Distributions of a synthetic survey; lengths are in grid cells unless named ``_m``."""

    shape: tuple[int, int] = (256, 256)
    spacing_m: float = 50.0
    noise_nt: float = 0.5
    inclination_range: tuple[float, float] = (20.0, 90.0)
    southern_fraction: float = 0.25
    declination_range: tuple[float, float] = (-30.0, 30.0)
    families: tuple[int, int] = (1, 3)
    dykes_per_256: tuple[int, int] = (3, 9)
    length: tuple[float, float] = (20.0, 400.0)
    width: tuple[float, float] = (0.2, 2.0)
    top: tuple[float, float] = (1.0, 4.0)
    depth_extent: tuple[float, float] = (16.0, 48.0)
    dip: tuple[float, float] = (60.0, 90.0)
    magnetisation: tuple[float, float] = (1.0, 6.0)
    reversed_fraction: float = 0.2
    remanent_fraction: float = 0.25
    plugs_per_256: tuple[int, int] = (0, 4)
    contacts: tuple[int, int] = (0, 2)
    regional_nt: tuple[float, float] = (10.0, 150.0)
    margin: float = 0.125
    band_cells: int = 1


@dataclass
class Survey:
    """A synthetic survey: anomaly grid (axis 0 = northing ascending) with its truth."""

    anomaly: np.ndarray
    spacing_m: float
    inclination: float
    declination: float
    axes: list[np.ndarray]
    target: np.ndarray
    origin_m: tuple[float, float] = (0.0, 0.0)
    meta: dict = field(default_factory=dict)

    def to_dataarray(self, crs: str | None = None):
        """The anomaly as an ``xarray.DataArray`` with ``northing, easting`` coordinates in metres."""
        from engine.geophys.grid import make_dataarray

        return make_dataarray(
            self.anomaly,
            self.spacing_m,
            self.origin_m,
            crs=crs,
            attrs={"inclination": self.inclination, "declination": self.declination, "units": "nT"},
        )

    def axes_lines(self) -> list[shapely.LineString]:
        """Truth axes as map-coordinate ``LineString`` s (x = easting, y = northing)."""
        n0, e0 = self.origin_m
        return [
            shapely.LineString(np.c_[e0 + a[:, 1] * self.spacing_m, n0 + a[:, 0] * self.spacing_m]) for a in self.axes
        ]


def _segment_coverage(
    shape: tuple[int, int], p0: np.ndarray, p1: np.ndarray, width: float
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Area fraction of each cell covered by a strip of ``width`` around segment p0-p1 (row, col)."""
    pad = width / 2 + 2
    r0, r1 = int(max(0, np.floor(min(p0[0], p1[0]) - pad))), int(min(shape[0], np.ceil(max(p0[0], p1[0]) + pad) + 1))
    c0, c1 = int(max(0, np.floor(min(p0[1], p1[1]) - pad))), int(min(shape[1], np.ceil(max(p0[1], p1[1]) + pad) + 1))
    if r0 >= r1 or c0 >= c1:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0))
    rr, cc = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    d = p1 - p0
    length = float(np.hypot(*d))
    u = d / length
    s = (rr - p0[0]) * u[0] + (cc - p0[1]) * u[1]
    t = np.abs(-(rr - p0[0]) * u[1] + (cc - p0[1]) * u[0])

    def overlap(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return np.clip(np.minimum(x + 0.5, hi) - np.maximum(x - 0.5, lo), 0.0, 1.0)

    return (slice(r0, r1), slice(c0, c1)), overlap(t, -width / 2, width / 2) * overlap(s, 0.0, length)


def _random_direction(rng: np.random.Generator) -> tuple[float, float]:
    return float(np.rad2deg(np.arcsin(rng.uniform(-1, 1)))), float(rng.uniform(-180, 180))


def make_survey(
    seed: int | np.random.SeedSequence,
    config: SurveyConfig = SurveyConfig(),
    inclination: float | None = None,
    declination: float | None = None,
) -> Survey:
    """Generate one survey with its truth from ``seed`` (reproducible)."""
    rng = np.random.default_rng(seed)
    cfg = config
    ny, nx = cfg.shape
    my, mx = int(round(ny * cfg.margin)), int(round(nx * cfg.margin))
    ext = (ny + 2 * my, nx + 2 * mx)
    h = cfg.spacing_m
    if inclination is None:
        inclination = float(rng.uniform(*cfg.inclination_range)) * (
            -1.0 if rng.random() < cfg.southern_fraction else 1.0
        )
    if declination is None:
        declination = float(rng.uniform(*cfg.declination_range))
    fwd = FourierForward(ext, h, inclination, declination, pad=0.25)
    layers: dict[tuple[float, float, float | None, float | None], np.ndarray] = {}

    def add(key: tuple, region: tuple[slice, slice] | None, values: np.ndarray) -> None:
        grid = layers.setdefault(key, np.zeros(ext))
        if region is None:
            grid += values
        else:
            grid[region] = (
                np.where(np.abs(values) > np.abs(grid[region]), values, grid[region])
                if key[0] >= 0
                else grid[region] + values
            )

    def direction() -> tuple[float | None, float | None, float]:
        sign = -1.0 if rng.random() < cfg.reversed_fraction else 1.0
        if rng.random() < cfg.remanent_fraction:
            inc_m, dec_m = _random_direction(rng)
            return round(inc_m), round(dec_m), 1.0
        return None, None, sign

    scale = np.sqrt(ny * nx) / 256
    axes: list[np.ndarray] = []
    frame = shapely.box(0, 0, nx - 1, ny - 1)
    for _ in range(int(rng.integers(cfg.families[0], cfg.families[1] + 1))):
        strike0 = rng.uniform(0, np.pi)
        for _ in range(max(1, int(round(rng.integers(cfg.dykes_per_256[0], cfg.dykes_per_256[1] + 1) * scale)))):
            strike = strike0 + np.deg2rad(rng.normal(0, 8))
            u = np.array([np.cos(strike), np.sin(strike)])
            v = np.array([-u[1], u[0]])
            length = rng.uniform(cfg.length[0], min(cfg.length[1], 0.9 * max(ny, nx)))
            centre = np.array([rng.uniform(-0.05, 1.05) * ny, rng.uniform(-0.05, 1.05) * nx]) + (my, mx)
            n_seg = int(rng.choice([1, 1, 2, 3]))
            width = float(np.exp(rng.uniform(*np.log(cfg.width))))
            top = round(float(rng.uniform(*cfg.top)) * 2) / 2 * h
            bottom = top + max(16, round(float(rng.uniform(*cfg.depth_extent)) / 8) * 8) * h
            dip = np.deg2rad(rng.uniform(*cfg.dip)) * rng.choice([-1, 1])
            inc_m, dec_m, sign = direction()
            mag = sign * rng.uniform(*cfg.magnetisation)
            bounds = np.sort(rng.uniform(0, length, n_seg - 1))
            edges = np.r_[0.0, bounds, length] - length / 2
            offset = 0.0
            for a, b in zip(edges[:-1], edges[1:]):
                gap = rng.uniform(0, 3) if a > edges[0] else 0.0
                if b - (a + gap) < 6:
                    continue
                p0 = centre + u * (a + gap) + v * offset
                p1 = centre + u * b + v * offset
                offset += rng.uniform(-3, 3)
                depths = (top, top + 2 * h, top + 8 * h, bottom)
                for z0, z1 in zip(depths[:-1], depths[1:]):
                    shift = v * ((z0 + z1) / 2 - top) / h / np.tan(dip)
                    region, cov = _segment_coverage(ext, p0 + shift, p1 + shift, width)
                    add((z0, z1, inc_m, dec_m), region, mag * cov)
                axis = shapely.LineString([(p0[1] - mx, p0[0] - my), (p1[1] - mx, p1[0] - my)]).intersection(frame)
                for part in getattr(axis, "geoms", [axis]):
                    if isinstance(part, shapely.LineString) and part.length >= 3:
                        axes.append(np.asarray(part.coords)[:, ::-1].copy())

    rr, cc = np.mgrid[0 : ext[0], 0 : ext[1]].astype(np.float64)
    for _ in range(int(rng.integers(cfg.plugs_per_256[0], cfg.plugs_per_256[1] + 1) * scale**2)):
        cy, cx = rng.uniform(0, ext[0]), rng.uniform(0, ext[1])
        ra, rb = rng.uniform(2, 12), rng.uniform(2, 12)
        phi = rng.uniform(0, np.pi)
        dy, dx = rr - cy, cc - cx
        q = np.hypot((dy * np.cos(phi) + dx * np.sin(phi)) / ra, (-dy * np.sin(phi) + dx * np.cos(phi)) / rb)
        cover = np.clip((1 - q) * min(ra, rb) + 0.5, 0, 1)
        inc_m, dec_m, sign = direction()
        top = round(float(rng.uniform(1, 5)) * 2) / 2 * h
        add((top, top + 40 * h, inc_m, dec_m), None, sign * rng.uniform(0.5, 4) * cover)
    for _ in range(int(rng.integers(cfg.contacts[0], cfg.contacts[1] + 1))):
        phi = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0.2, 0.8) * ext[0], rng.uniform(0.2, 0.8) * ext[1]
        along = -(rr - cy) * np.sin(phi) + (cc - cx) * np.cos(phi)
        across = (rr - cy) * np.cos(phi) + (cc - cx) * np.sin(phi)
        across = across + rng.uniform(0, 10) * np.sin(along / rng.uniform(20, 80) + rng.uniform(0, 6.3))
        top = round(float(rng.uniform(2, 8)) * 2) / 2 * h
        add(
            (top, top + 60 * h, None, None),
            None,
            rng.choice([-1, 1]) * rng.uniform(0.3, 2.0) * np.clip(across + 0.5, 0, 1),
        )

    for (z0, z1, inc_m, dec_m), grid in layers.items():
        fwd.add(grid, z0, z1, inc_m, dec_m)
    anomaly = fwd.anomaly()[my : my + ny, mx : mx + nx]

    smooth = ndimage.gaussian_filter(rng.normal(size=(ny, nx)), sigma=max(ny, nx) / 6, mode="wrap")
    smooth = smooth / (np.abs(smooth).max() + 1e-12)
    plane = rng.normal(size=2)
    ramp = (plane[0] * np.linspace(-1, 1, ny)[:, None] + plane[1] * np.linspace(-1, 1, nx)[None, :]) / (
        np.abs(plane).sum() + 1e-12
    )
    anomaly = (
        anomaly
        + rng.uniform(*cfg.regional_nt) * (0.5 * smooth + 0.5 * ramp)
        + rng.normal(0, cfg.noise_nt, size=(ny, nx))
    )
    return Survey(
        anomaly=anomaly.astype(np.float32),
        spacing_m=h,
        inclination=inclination,
        declination=declination,
        axes=axes,
        target=axis_raster(axes, cfg.shape, cfg.band_cells),
        meta={"n_layers": len(layers)},
    )


def axis_raster(axes: list[np.ndarray], shape: tuple[int, int], band_cells: int = 1) -> np.ndarray:
    """Rasterise axes (row, col polylines) into a uint8 mask widened by ``band_cells`` each side."""
    out: np.ndarray = np.zeros(shape, np.uint8)
    shift = 4
    for a in axes:
        pts = np.round(a[:, ::-1] * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], False, 1, thickness=1, lineType=cv2.LINE_8, shift=shift)
    if band_cells > 0:
        out = cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_cells + 1,) * 2))
    return out
