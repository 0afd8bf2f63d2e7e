"""Synthetic crossed-polar (XPL) stacks with known stage rotations and misregistration.

Under crossed polars an isotropic mineral stays dark at every stage angle; an
anisotropic grain brightens four times per turn (``sin²(2(θ - φ))``, 90° period, with
``φ`` the grain's own extinction angle) and its tint swings between two anisotropy
colours with the same period. A little of the plane-polarised (PPL) reflectance leaks
through (polars never cross perfectly), so pits, scratches and grain outlines stay
faintly visible, which is what registration locks on to.

Capture ``k`` is taken at stage angle ``θ_k``: the camera sees the section rotated by
``θ_k`` plus a small known misregistration (rotation-centre offset, extra rotation).
Its truth is the 2×3 matrix ``M_k`` mapping XPL capture pixels to PPL pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from engine.io.atomic import atomic_write_text
from engine.io.images import write_image
from engine.synth.minerals import ANISOTROPIC, REFLECTANCE_RGB
from engine.synth.section import Section, SectionSpec, _uniform

# Peak XPL brightness (0..1 of full scale) and the two anisotropy tints of each anisotropic class.
ANISOTROPY: dict[int, tuple[float, tuple[float, float, float], tuple[float, float, float]]] = {
    5: (0.30, (0.95, 0.80, 0.60), (0.70, 0.75, 0.90)),  # pyrrhotite: yellowish-grey to bluish-grey
    9: (0.26, (0.95, 0.85, 0.75), (0.70, 0.80, 1.00)),  # arsenopyrite: brownish-yellow to bluish
    10: (0.16, (0.80, 0.80, 0.85), (0.65, 0.65, 0.75)),  # hematite: greyish
    12: (0.55, (1.00, 0.55, 0.25), (0.90, 0.70, 0.35)),  # covellite: fiery orange
    13: (0.32, (0.85, 1.00, 0.70), (0.95, 0.85, 0.60)),  # marcasite: greenish-yellow to brownish
}

# PPL colours for S3-like sets where anisotropic minerals look like isotropic pyrite (6).
LOOKALIKE_RGB: dict[int, tuple[int, int, int]] = {**REFLECTANCE_RGB, 9: (226, 217, 170), 13: (224, 214, 164)}


@dataclass(frozen=True)
class XplConfig:
    """Stage angles (degrees), misregistration bounds and the crossed-polar rendering."""

    angles: tuple[float, ...] = (0.0, 15.0, 30.0, 45.0, 60.0, 75.0)
    centre_offset_px: float = 6.0
    extra_rotation_deg: float = 0.4
    leak: float = 0.10
    noise: float = 1.5
    seed: int = 0
    anisotropy: dict[int, tuple[float, tuple[float, float, float], tuple[float, float, float]]] = field(
        default_factory=lambda: dict(ANISOTROPY)
    )


@dataclass
class XplStack:
    """A PPL capture, its XPL captures and the truth."""

    ppl: np.ndarray
    labels: np.ndarray
    xpl: list[np.ndarray]
    angles: list[float]
    transforms: list[np.ndarray]

    def rotation_deg(self, k: int) -> float:
        m = self.transforms[k]
        return math.degrees(math.atan2(m[1, 0], m[0, 0]))


def _margin(h: int, w: int, cfg: XplConfig) -> int:
    return int(math.ceil(math.hypot(h, w) / 2 - min(h, w) / 2 + 2 * cfg.centre_offset_px)) + 8


@dataclass(frozen=True)
class GrainMap:
    """Class codes, grain ids and each grain's extinction angle over a region."""

    labels: np.ndarray
    grain_id: np.ndarray
    codes: np.ndarray
    extinction_deg: np.ndarray

    @classmethod
    def of(cls, section: Section, y0: int, x0: int, h: int, w: int) -> GrainMap:
        lab, gid, _ = section.labels(y0, x0, h, w)
        grains = section.grains_near(y0, x0, h, w)
        phi = np.zeros(len(grains) + 1)
        codes = np.zeros(len(grains) + 1, np.int64)
        for i, g in enumerate(grains, start=1):
            phi[i] = 180.0 * float(_uniform(section.spec.seed, 23, int(g.cy * 16), int(g.cx * 16)))
            codes[i] = g.code
        return cls(lab, gid, codes, phi)


def xpl_scene(
    grains: GrainMap, ppl: np.ndarray, angle_deg: float, cfg: XplConfig, colors: dict[int, tuple[int, int, int]]
) -> np.ndarray:
    """Crossed-polar appearance (float32 0..255, ``(h, w, 3)``) of a region at one stage angle."""
    out = cfg.leak * ppl.astype(np.float32)
    t = np.radians(angle_deg - grains.extinction_deg)
    bright = np.sin(2 * t) ** 2
    mix = (1 + np.cos(4 * t)) / 2
    per_id = np.zeros((len(grains.codes), 3), np.float32)
    for code, (amp, ta, tb) in cfg.anisotropy.items():
        sel = grains.codes == code
        if not sel.any():
            continue
        tint = mix[sel, None] * np.asarray(ta) + (1 - mix[sel, None]) * np.asarray(tb)
        per_id[sel] = 255.0 * amp * bright[sel, None] * tint
    base = np.zeros((256, 3), np.float32)
    for code, rgb in colors.items():
        base[code] = rgb
    # pits, scratches, grain-edge shading and texture darken the anisotropic signal as they darken PPL
    relief = np.clip(ppl.astype(np.float32).sum(-1) / np.maximum(base[grains.labels].sum(-1), 1.0), 0.0, 1.5)
    out += per_id[grains.grain_id] * ((grains.labels > 0) * relief)[..., None]
    return out


def _stage_transform(h: int, w: int, angle: float, rng: np.random.Generator, cfg: XplConfig) -> np.ndarray:
    """2×3 map from XPL capture pixels to PPL pixels: rotation about a slightly offset centre."""
    centre = np.array([(w - 1) / 2, (h - 1) / 2]) + rng.uniform(-cfg.centre_offset_px, cfg.centre_offset_px, 2)
    th = math.radians(angle + rng.uniform(-cfg.extra_rotation_deg, cfg.extra_rotation_deg))
    r = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    return np.hstack([r, (centre - r @ centre)[:, None]])


def render_xpl_stack(spec: SectionSpec, height: int, width: int, cfg: XplConfig = XplConfig()) -> XplStack:
    """PPL capture, labels and XPL captures of a section region ``(0, 0, height, width)``."""
    section = Section(spec)
    m = _margin(height, width, cfg)
    big_rgb, big_lab = section.render(-m, -m, height + 2 * m, width + 2 * m)
    ppl, labels = big_rgb[m : m + height, m : m + width], big_lab[m : m + height, m : m + width]
    rng = np.random.default_rng([cfg.seed, spec.seed, 29])
    grains = GrainMap.of(section, -m, -m, height + 2 * m, width + 2 * m)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    xpl, mats = [], []
    for angle in cfg.angles:
        scene = xpl_scene(grains, big_rgb, angle, cfg, spec.colors)
        M = _stage_transform(height, width, angle, rng, cfg)
        mx = (M[0, 0] * xs + M[0, 1] * ys + M[0, 2] + m).astype(np.float32)
        my = (M[1, 0] * xs + M[1, 1] * ys + M[1, 2] + m).astype(np.float32)
        img: np.ndarray = cv2.remap(scene, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        img += rng.normal(0.0, cfg.noise, img.shape).astype(np.float32)
        xpl.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
        mats.append(M)
    return XplStack(ppl, labels, xpl, list(cfg.angles), mats)


def s3_lookalike_spec(
    seed: int, grain_diameter: float = 40.0, pits_per_cell: float = 8.0, texture: float = 0.12
) -> SectionSpec:
    """An S3 (anisotropic) section whose arsenopyrite and marcasite look like pyrite in PPL.

    Polishing pits and relief texture are stronger than the default: they are what PPL and XPL share.
    """
    return replace(
        SectionSpec(
            seed=seed, association="S3", grain_diameter=grain_diameter, pits_per_cell=pits_per_cell, texture=texture
        ),
        colors=dict(LOOKALIKE_RGB),
    )


__all__ = [
    "ANISOTROPIC",
    "ANISOTROPY",
    "GrainMap",
    "LOOKALIKE_RGB",
    "XplConfig",
    "XplStack",
    "render_xpl_stack",
    "s3_lookalike_spec",
    "write_xpl_collection",
    "xpl_scene",
]


def write_xpl_collection(
    root: str | Path,
    n_train: int = 8,
    n_test: int = 2,
    size: tuple[int, int] = (512, 683),
    seed: int = 0,
    cfg: XplConfig = XplConfig(),
    grain_diameter: float = 40.0,
) -> Path:
    """LumenStone layout of S3 look-alike sections plus ``xpl/{split}/<stem>/<angle>.png`` and ``xpl_truth.json``."""
    root = Path(root)
    truth = {}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 10_000)):
        for i in range(n):
            spec = s3_lookalike_spec(seed * 100_003 + offset + i, grain_diameter)
            st = render_xpl_stack(spec, size[0], size[1], replace(cfg, seed=cfg.seed + offset + i))
            name = f"S3_{split}_{i:03d}"
            xdir = root / "xpl" / split / name
            for d in (root / "imgs" / split, root / "masks" / split, xdir):
                d.mkdir(parents=True, exist_ok=True)
            write_image(root / "imgs" / split / f"{name}.png", cv2.cvtColor(st.ppl, cv2.COLOR_RGB2BGR))
            write_image(root / "masks" / split / f"{name}.png", st.labels)
            for a, img in zip(st.angles, st.xpl):
                write_image(xdir / f"{int(round(a)):03d}.png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            truth[name] = {"split": split, "angles": st.angles, "transforms": [m.tolist() for m in st.transforms]}
    atomic_write_text(root / "xpl_truth.json", json.dumps(truth, indent=1))
    return root
