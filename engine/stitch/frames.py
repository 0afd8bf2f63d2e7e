"""A section's raw tiles, nominal positions and per-frame correction (flat field, lens)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.calibrate.flat import FlatField, apply_flat
from engine.calibrate.lens import LensModel, undistort, undistort_maps
from engine.errors import LodeInputError
from engine.io import fs
from engine.io.images import IMAGE_SUFFIXES, list_images


@dataclass(frozen=True)
class SectionInput:
    section_id: str
    tiles: list[Path | str]
    nominal_xy: np.ndarray | None


@dataclass(frozen=True)
class Correction:
    """What is done to every raw frame before registration: flat field, then lens."""

    lens: LensModel | None = None
    flat: FlatField | None = None


@dataclass
class CorrectedFrame:
    image: np.ndarray
    valid: np.ndarray


def read_section(section_dir: str | Path) -> SectionInput:
    """``<section>/tiles/*`` and, if present, ``<section>/positions.csv`` (file, x, y in pixels);
    ``section_dir`` is a local path or URI."""
    sec = str(section_dir) if fs.is_uri(section_dir) else Path(section_dir)
    tile_dir = sec / "tiles" if isinstance(sec, Path) else fs.join(sec, "tiles")
    tiles = list_images(tile_dir)
    if not tiles:
        raise LodeInputError(tile_dir, f"no images ({', '.join(IMAGE_SUFFIXES)})")
    pos_file = sec / "positions.csv" if isinstance(sec, Path) else fs.join(sec, "positions.csv")
    if not fs.exists(pos_file):
        return SectionInput(fs.name(sec), tiles, None)
    try:
        text = io.StringIO(fs.read_bytes(pos_file).decode(), newline="")
        rows = {r["file"]: (float(r["x"]), float(r["y"])) for r in csv.DictReader(text)}
    except (KeyError, ValueError, csv.Error) as exc:
        raise LodeInputError(pos_file, f"needs columns file, x, y with numbers: {exc}") from exc
    names = [fs.name(t) for t in tiles]
    missing = [n for n in names if n not in rows]
    if missing:
        raise LodeInputError(pos_file, f"no position for {', '.join(missing[:5])}")
    xy = np.array([rows[n] for n in names], np.float64)
    if not np.all(np.isfinite(xy)):
        raise LodeInputError(pos_file, "positions must be finite")
    return SectionInput(fs.name(sec), tiles, xy)


def correct(
    raw: np.ndarray, corr: Correction, maps: tuple[np.ndarray, np.ndarray] | None = None, source: str | Path = "frame"
) -> CorrectedFrame:
    """Flat/dark correction then undistortion; ``valid`` marks pixels seen by the sensor (eroded 2 px)."""
    h, w = raw.shape[:2]
    img = raw.astype(np.float32)
    if corr.flat is not None:
        if corr.flat.frame_hw != (h, w):
            raise LodeInputError(source, f"frame is {h}×{w} but the flat field is {corr.flat.frame_hw}")
        img = apply_flat(raw, corr.flat)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    valid: np.ndarray = np.full((h, w), 255, np.uint8)
    if corr.lens is not None and not corr.lens.is_identity:
        if tuple(corr.lens.frame_hw) != (h, w):
            raise LodeInputError(source, f"frame is {h}×{w} but the lens was calibrated at {corr.lens.frame_hw}")
        maps = maps or undistort_maps(corr.lens)
        img = undistort(img, corr.lens, maps)
        valid = cv2.remap(valid, maps[0], maps[1], cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    valid = cv2.erode(valid, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return CorrectedFrame(img, valid)


def grey_std(frame: CorrectedFrame) -> float:
    """Standard deviation (DN) of the corrected frame's grey levels over its valid pixels: near 0 for a
    blank frame (lens cap, lamp off, bare epoxy or glass once flat-field corrected)."""
    grey = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)
    _, std = cv2.meanStdDev(grey, mask=frame.valid)
    return float(std[0, 0])
