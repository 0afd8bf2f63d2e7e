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

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


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


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 image from a local path or URI; raises LodeInputError for missing or unreadable files."""
    if fs.is_uri(path):
        if not fs.exists(path):
            raise LodeInputError(path, "no such image file")
        img = cv2.imdecode(np.frombuffer(fs.read_bytes(path), np.uint8), cv2.IMREAD_COLOR)
    else:
        p = Path(path)
        if not p.is_file():
            raise LodeInputError(p, "no such image file")
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise LodeInputError(path, "cannot decode image")
    return np.ascontiguousarray(img[..., ::-1])


def read_images(folder: str | Path) -> list[np.ndarray]:
    return [read_image(p) for p in list_images(folder)]


def list_images(folder: str | Path) -> list[Path | str]:
    """Frames of a folder, sorted: ``Path`` objects, or URIs (text) for an object-store folder."""
    if not fs.isdir(folder):
        raise LodeInputError(folder, "no such folder")
    if fs.is_uri(folder):
        files: list = [p for p in fs.glob(fs.join(str(folder), "*")) if _is_frame(fs.name(p))]
    else:
        files = sorted(p for p in Path(folder).iterdir() if _is_frame(p.name))
    if not files:
        raise LodeInputError(folder, "no images")
    return files


def _is_frame(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES and ".tmp" not in name


def read_section(section_dir: str | Path) -> SectionInput:
    """``<section>/tiles/*`` and, if present, ``<section>/positions.csv`` (file, x, y in pixels);
    ``section_dir`` is a local path or URI."""
    sec = str(section_dir) if fs.is_uri(section_dir) else Path(section_dir)
    tiles = list_images(sec / "tiles" if isinstance(sec, Path) else fs.join(sec, "tiles"))
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


def correct(raw: np.ndarray, corr: Correction, maps: tuple[np.ndarray, np.ndarray] | None = None,
            source: str | Path = "frame") -> CorrectedFrame:
    """Flat/dark correction then undistortion; ``valid`` marks pixels seen by the sensor (eroded 2 px)."""
    h, w = raw.shape[:2]
    img = raw.astype(np.float32)
    if corr.flat is not None:
        if corr.flat.frame_hw != (h, w):
            raise LodeInputError(source, f"frame is {h}×{w} but the flat field is {corr.flat.frame_hw}")
        img = apply_flat(raw, corr.flat)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    valid = np.full((h, w), 255, np.uint8)
    if corr.lens is not None and not corr.lens.is_identity:
        if tuple(corr.lens.frame_hw) != (h, w):
            raise LodeInputError(source, f"frame is {h}×{w} but the lens was calibrated at {corr.lens.frame_hw}")
        maps = maps or undistort_maps(corr.lens)
        img = undistort(img, corr.lens, maps)
        valid = cv2.remap(valid, maps[0], maps[1], cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    valid = cv2.erode(valid, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return CorrectedFrame(img, valid)
