"""Raw crossed-polar (XPL) captures of a synthetic section's tile grid, with their truth.

The section (:class:`~engine.synth.section.Section`) is photographed as a PPL tile grid
(:func:`~engine.synth.captures.capture_grid`); at every crossed-polar stage angle the same grid
is photographed again through the same camera (lens, vignetting, exposure drift, noise) from its
XPL appearance (:func:`~engine.synth.xpl.xpl_scene`), each frame a little off its PPL frame: the
angle's offset ``D`` (2×3, XPL frame px → PPL frame px; a shift of ``offset_px`` in a random
direction, turned by up to ``rotation_deg`` about the frame centre), the same for every tile of
that angle. Written as the raw collection layout: ``<section>/tiles/*``, ``<section>/xpl/<angle>/*``
with the tiles' file stems.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.io.images import write_image
from engine.synth.captures import CaptureConfig, Captures, capture_grid, write_section
from engine.synth.section import Section, SectionSpec
from engine.synth.xpl import GrainMap, XplConfig, xpl_scene


@dataclass(frozen=True)
class XplCaptureConfig:
    """Crossed-polar stage angles (degrees), each angle's offset from the PPL frames, the XPL rendering."""

    angles: tuple[float, ...] = (0.0, 45.0)
    offset_px: float = 1.5
    rotation_deg: float = 0.0
    seed: int = 0
    xpl: XplConfig = field(default_factory=lambda: XplConfig(noise=0.0))


@dataclass
class XplSectionCaptures:
    """A section's PPL tiles and, per angle folder name, its XPL tiles, with the truth: the PPL source
    ``(H, W, 3)`` uint8, each angle's XPL scene over it ``(H, W, 3)`` float32 and offset ``D`` (2×3)."""

    ppl: Captures
    xpl: dict[str, Captures]
    source: np.ndarray
    scenes: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]


def angle_folder(angle: float) -> str:
    """The folder (and channel) name of a stage angle: ``45.0`` → ``045`` (channel ``XPL045``)."""
    return f"{int(round(angle)):03d}"


def _offset(frame_hw: tuple[int, int], rng: np.random.Generator, cfg: XplCaptureConfig) -> np.ndarray:
    h, w = frame_hw
    phi = rng.uniform(0.0, 2 * math.pi)
    th = math.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    r = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    t = c - r @ c + cfg.offset_px * np.array([math.cos(phi), math.sin(phi)])
    return np.hstack([r, t[:, None]])


def capture_xpl_section(spec: SectionSpec, cfg: CaptureConfig, xcfg: XplCaptureConfig) -> XplSectionCaptures:
    """The PPL tile grid of section ``spec`` as ``cfg`` says, and one XPL grid per angle of ``xcfg``."""
    section = Section(spec)
    height, width = cfg.source_hw
    rgb, _ = section.render(0, 0, height, width)
    grains = GrainMap.of(section, 0, 0, height, width)
    rng = np.random.default_rng([xcfg.seed, cfg.seed, 31])
    xpl, scenes, offsets = {}, {}, {}
    for a in xcfg.angles:
        name = angle_folder(a)
        scenes[name] = xpl_scene(grains, rgb, a, xcfg.xpl, spec.colors)
        offsets[name] = _offset(cfg.frame_hw, rng, xcfg)
        xpl[name] = capture_grid(scenes[name], cfg, frame_offset=offsets[name])
    return XplSectionCaptures(capture_grid(rgb, cfg), xpl, rgb, scenes, offsets)


def write_xpl_section(root: str | Path, section_id: str, caps: XplSectionCaptures, positions: bool = True) -> Path:
    """Write the PPL tiles (:func:`~engine.synth.captures.write_section`), ``<section>/xpl/<angle>/<tile>.png``
    and each angle's offset into ``truth.json`` (``xpl``: ``{angle: {"offset": D}}``)."""
    sec = write_section(root, section_id, caps.ppl, positions)
    for name, grid in caps.xpl.items():
        folder = sec / "xpl" / name
        folder.mkdir(parents=True, exist_ok=True)
        for tile, frame in zip(caps.ppl.names, grid.frames):
            write_image(
                folder / f"{tile}.png", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1]
            )
    truth = json.loads((sec / "truth.json").read_text())
    truth["xpl"] = {name: {"offset": d.tolist()} for name, d in caps.offsets.items()}
    (sec / "truth.json").write_text(json.dumps(truth, indent=1))
    return sec
