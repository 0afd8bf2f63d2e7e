"""Synthetic polished sections with exact truth, renderable block by block.

Everything is a deterministic function of (seed, global pixel coordinates): grains are
placed per lattice cell from a cell-seeded generator, textures are hashed value noise,
scratches and pits are per cell. Any window of an arbitrarily large section can
therefore be rendered on its own and agrees with its neighbours pixel for pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.synth.minerals import ASSOCIATIONS, REFLECTANCE_RGB, Association

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _hash(*parts: np.ndarray | int) -> np.ndarray:
    """splitmix64-style hash of integer arrays → uint64 (vectorised, deterministic)."""
    h: np.ndarray = np.asarray(np.uint64(0x9E3779B97F4A7C15))
    with np.errstate(over="ignore"):
        for p in parts:
            v = np.asarray(p).astype(np.int64).astype(np.uint64)
            h = h ^ (v + np.uint64(0x9E3779B97F4A7C15) + (h << np.uint64(6)) + (h >> np.uint64(2)))
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(31))
    return h


def _uniform(*parts: np.ndarray | int) -> np.ndarray:
    return (_hash(*parts) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def value_noise(seed: int, y0: int, x0: int, h: int, w: int, scale: float) -> np.ndarray:
    """Smooth noise in [-1, 1] on a lattice of spacing ``scale`` px, at global coordinates."""
    ys = (np.arange(y0, y0 + h) / scale)[:, None]
    xs = (np.arange(x0, x0 + w) / scale)[None, :]
    iy, ix = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    fy, fx = ys - iy, xs - ix
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)

    def v(dy: int, dx: int) -> np.ndarray:
        return _uniform(seed, iy + dy, ix + dx)

    top = v(0, 0) * (1 - fx) + v(0, 1) * fx
    bot = v(1, 0) * (1 - fx) + v(1, 1) * fx
    return ((top * (1 - fy) + bot * fy) * 2 - 1).astype(np.float32)


@dataclass(frozen=True)
class SectionSpec:
    """Parameters of a synthetic section (all lengths in pixels)."""

    seed: int = 0
    association: str = "S1"
    grain_diameter: float = 60.0
    size_sigma: float = 0.45
    cell: int = 128
    roughness: float = 0.18
    scratches_per_cell: float = 0.05
    pits_per_cell: float = 0.6
    boundary_shading: float = 0.18
    texture: float = 0.05
    noise: float = 3.0
    colour_jitter: float = 0.025
    colors: dict[int, tuple[int, int, int]] = field(default_factory=lambda: dict(REFLECTANCE_RGB))

    @property
    def assoc(self) -> Association:
        if self.association not in ASSOCIATIONS:
            raise ValueError(f"unknown association {self.association!r}; known: {sorted(ASSOCIATIONS)}")
        return ASSOCIATIONS[self.association]


@dataclass(frozen=True)
class Grain:
    priority: float
    code: int
    cy: float
    cx: float
    radius: float
    harmonics: tuple[tuple[float, float], ...]
    tint: tuple[float, float, float]


class Section:
    """A synthetic section: ``render(y0, x0, h, w)`` gives (rgb uint8 (h,w,3), labels uint8 (h,w))."""

    def __init__(self, spec: SectionSpec):
        self.spec = spec
        a = spec.assoc
        ore = {c: s for c, s in a.shares.items() if c != 0}
        total_ore = sum(ore.values())
        self.ore_fraction = total_ore / sum(a.shares.values())
        # Per-grain class probability so that expected area matches the target share.
        self.codes = sorted(ore)
        mean_area = {c: (a.size.get(c, 1.0)) ** 2 for c in self.codes}
        wts = np.array([ore[c] / mean_area[c] for c in self.codes])
        self.class_p = wts / wts.sum()
        self.sizes = np.array([a.size.get(c, 1.0) for c in self.codes])
        mean_r = spec.grain_diameter / 2 * math.exp(spec.size_sigma**2)
        e_area = math.pi * mean_r**2 * float((self.class_p * self.sizes**2).sum()) * (1 + spec.roughness**2)
        coverage = -math.log(max(1e-6, 1 - self.ore_fraction))
        self.grains_per_cell = coverage * spec.cell**2 / e_area
        self.max_radius = min(spec.cell * 1.5, spec.grain_diameter * 3.0)

    def _cell_grains(self, cy: int, cx: int) -> list[Grain]:
        s = self.spec
        rng = np.random.default_rng([s.seed, 7, cy + 1_000_003, cx + 2_000_003])
        n = rng.poisson(self.grains_per_cell)
        out = []
        for _ in range(n):
            k = rng.choice(len(self.codes), p=self.class_p)
            d = s.grain_diameter * self.sizes[k] * rng.lognormal(0.0, s.size_sigma)
            r = float(min(d / 2, self.max_radius / (1 + 2 * s.roughness)))
            harm = tuple(
                (float(rng.normal(0, s.roughness / (h**0.8))), float(rng.uniform(0, 2 * math.pi))) for h in range(2, 7)
            )
            tint = tuple(float(v) for v in rng.normal(0, s.colour_jitter, 3))
            out.append(
                Grain(
                    float(rng.random()),
                    int(self.codes[k]),
                    (cy + rng.random()) * s.cell,
                    (cx + rng.random()) * s.cell,
                    max(r, 2.0),
                    harm,
                    tint,  # type: ignore[arg-type]
                )
            )
        return out

    def grains_near(self, y0: int, x0: int, h: int, w: int) -> list[Grain]:
        c = self.spec.cell
        m = int(math.ceil(self.max_radius / c))
        grains = []
        for cy in range(y0 // c - m, (y0 + h) // c + m + 1):
            for cx in range(x0 // c - m, (x0 + w) // c + m + 1):
                grains.extend(self._cell_grains(cy, cx))
        grains.sort(key=lambda g: g.priority)
        return grains

    def labels(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class codes, a per-pixel grain id (0 = background) and each id's colour tint (ids+1, 3)."""
        lab = np.zeros((h, w), np.uint8)
        gid = np.zeros((h, w), np.int32)
        grains = self.grains_near(y0, x0, h, w)
        tints = np.zeros((len(grains) + 1, 3), np.float32)
        for i, g in enumerate(grains, start=1):
            rmax = g.radius * (1 + sum(abs(a) for a, _ in g.harmonics))
            ya, yb = int(max(math.floor(g.cy - rmax), y0)), int(min(math.ceil(g.cy + rmax) + 1, y0 + h))
            xa, xb = int(max(math.floor(g.cx - rmax), x0)), int(min(math.ceil(g.cx + rmax) + 1, x0 + w))
            if ya >= yb or xa >= xb:
                continue
            yy = np.arange(ya, yb, dtype=np.float64)[:, None] + 0.5 - g.cy
            xx = np.arange(xa, xb, dtype=np.float64)[None, :] + 0.5 - g.cx
            theta = np.arctan2(yy, xx)
            rad = np.ones_like(theta)
            for hnum, (amp, ph) in enumerate(g.harmonics, start=2):
                rad += amp * np.cos(hnum * theta + ph)
            inside = yy * yy + xx * xx <= (g.radius * rad) ** 2
            lab[ya - y0 : yb - y0, xa - x0 : xb - x0][inside] = g.code
            gid[ya - y0 : yb - y0, xa - x0 : xb - x0][inside] = i
            tints[i] = g.tint
        return lab, gid, tints

    def render(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.spec
        halo = 12
        lab_h, gid_h, tints = self.labels(y0 - halo, x0 - halo, h + 2 * halo, w + 2 * halo)
        lut = np.zeros((256, 3), np.float32)
        for code, rgb in s.colors.items():
            lut[code] = rgb
        rgb = lut[lab_h].copy()
        rgb *= 1.0 + tints[gid_h]
        edges = cv2.morphologyEx(gid_h.astype(np.float32), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        dist = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3)
        shade = 1.0 - s.boundary_shading * np.where(dist < 8, np.exp(-dist / 2.0), 0.0)
        rgb *= shade[..., None]
        rgb = rgb[halo:-halo, halo:-halo]
        tex = value_noise(s.seed * 31 + 1, y0, x0, h, w, 24.0) + 0.5 * value_noise(s.seed * 31 + 2, y0, x0, h, w, 6.0)
        rgb *= (1.0 + s.texture * tex)[..., None]
        self._draw_defects(rgb, y0, x0, h, w)
        yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w]
        for ch in range(3):
            rgb[..., ch] += s.noise * (2 * _uniform(s.seed, 11 + ch, yy, xx).astype(np.float32) - 1) * 1.7
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), lab_h[halo:-halo, halo:-halo]

    def _draw_defects(self, rgb: np.ndarray, y0: int, x0: int, h: int, w: int) -> None:
        s = self.spec
        c = s.cell
        reach = 3
        overlay = np.zeros(rgb.shape[:2], np.float32)
        for cy in range(y0 // c - reach, (y0 + h) // c + reach + 1):
            for cx in range(x0 // c - reach, (x0 + w) // c + reach + 1):
                rng = np.random.default_rng([s.seed, 13, cy + 1_000_003, cx + 2_000_003])
                for _ in range(rng.poisson(s.scratches_per_cell)):
                    py, px = (cy + rng.random()) * c, (cx + rng.random()) * c
                    ang, length = rng.uniform(0, math.pi), rng.uniform(0.5, reach) * c
                    _stamp_segment(overlay, y0, x0, py, px, ang, length / 2, 0.8, float(rng.uniform(0.1, 0.25)))
                for _ in range(rng.poisson(s.pits_per_cell)):
                    py, px = (cy + rng.random()) * c, (cx + rng.random()) * c
                    _stamp_segment(
                        overlay, y0, x0, py, px, 0.0, 0.0, float(rng.uniform(1.0, 3.5)), float(rng.uniform(0.4, 0.7))
                    )
        rgb *= (1.0 - overlay)[..., None]


def _stamp_segment(
    overlay: np.ndarray, y0: int, x0: int, cy: float, cx: float, angle: float, half: float, width: float, value: float
) -> None:
    """Max-composite an anti-aliased segment (a disc when ``half`` is 0) at global coordinates."""
    dy, dx = math.sin(angle) * half, math.cos(angle) * half
    ya = max(int(math.floor(cy - abs(dy) - width - 1)), y0)
    yb = min(int(math.ceil(cy + abs(dy) + width + 2)), y0 + overlay.shape[0])
    xa = max(int(math.floor(cx - abs(dx) - width - 1)), x0)
    xb = min(int(math.ceil(cx + abs(dx) + width + 2)), x0 + overlay.shape[1])
    if ya >= yb or xa >= xb:
        return
    yy = np.arange(ya, yb, dtype=np.float64)[:, None] + 0.5 - cy
    xx = np.arange(xa, xb, dtype=np.float64)[None, :] + 0.5 - cx
    t = np.clip((yy * dy + xx * dx) / max(half * half, 1e-9), -1.0, 1.0) if half > 0 else 0.0
    dist = np.hypot(yy - t * dy, xx - t * dx)
    v = (value * np.clip(width + 0.5 - dist, 0.0, 1.0)).astype(np.float32)
    view = overlay[ya - y0 : yb - y0, xa - x0 : xb - x0]
    np.maximum(view, v, out=view)


def render_section(spec: SectionSpec, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A whole (small) section: rgb (h, w, 3) uint8 and labels (h, w) uint8."""
    return Section(spec).render(0, 0, height, width)
