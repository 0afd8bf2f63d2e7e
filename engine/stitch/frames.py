"""A section's raw tiles, nominal positions and per-frame correction (flat field, lens).

A section's optional ``positions.csv`` gives one row per tile, with one of two headers:

- ``file,x,y``: nominal positions in pixels of the frames (the stitcher pairs frames that overlap there);
- ``file,x_um,y_um``: stage positions in micrometres, as a microscope's stage records them (the
  stitcher turns them into nominal positions in pixels through coarse matches between frames at
  nearby stage positions, and fits the pixel size to them after the alignment: :mod:`engine.stitch.stage`).

Any other column, a tile without a row, a file named twice, a position that is not a finite number,
or two frames at one position is refused, naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from engine.calibrate.flat import FlatField
from engine.calibrate.lens import LensModel
from engine.errors import LodeInputError
from engine.io import fs
from engine.io.atomic import atomic_write_bytes
from engine.io.images import IMAGE_SUFFIXES, list_images, read_rgb
from engine.raster.stage import release_heap

if TYPE_CHECKING:
    from engine.calibrate.capture import CaptureCalibration


PIXEL_COLUMNS = ("file", "x", "y")
STAGE_COLUMNS = ("file", "x_um", "y_um")


@dataclass(frozen=True)
class SectionInput:
    """A section's tiles with their nominal positions in pixels (``nominal_xy``) or stage positions in
    micrometres (``stage_um``), ``(n, 2)`` in tile order; neither without ``positions.csv``."""

    section_id: str
    tiles: list[Path | str]
    nominal_xy: np.ndarray | None
    stage_um: np.ndarray | None = None


@dataclass(frozen=True)
class Correction:
    """What is done to every raw frame before registration: flat field, then lens."""

    lens: LensModel | None = None
    flat: FlatField | None = None

    @cached_property
    def key(self) -> str:
        """A hash of the lens and flat field: corrections with the same key correct frames alike.
        Computed once and pickled with the correction; the flat's own hash (:attr:`FlatField.key`) goes
        with it, so a correction with another lens is hashed without reading the flat again."""
        h = hashlib.sha256()
        if self.lens is not None:
            h.update(json.dumps(self.lens.to_dict(), sort_keys=True).encode())
        if self.flat is not None:
            h.update(self.flat.key.encode())
        return h.hexdigest()


class FrameCorrector:
    """Corrects a section's raw frames on their way in (:class:`~engine.calibrate.capture.CaptureCalibration`
    on the device this process was given), caches each corrected frame in the section's work folder and
    returns what the section needs of it in the driver: a thumbnail and the grey-level spread.

    Ray runs it as one actor per job (``section.py``), so torch is imported once and the
    undistortion maps are built once per lens and frame size. Registration and rendering read the
    corrected frames from the work folder, so no section's frames are held in the object store.
    """

    def __init__(self, device: str = "cpu", threads: int | None = None):
        self.device = device
        self.threads = threads
        self._cal: dict[tuple[str, tuple[int, int]], CaptureCalibration] = {}
        self._building = threading.Lock()

    def calibration(self, corr: Correction, hw: tuple[int, int], source: str | Path) -> CaptureCalibration:
        """The frame calibration of ``corr`` for frames ``hw`` (built once, then kept)."""
        from engine.calibrate.capture import CaptureCalibration

        key = (corr.key, hw)
        with self._building:  # frames corrected side by side wait for one build
            if key not in self._cal:
                if self.threads:
                    import torch

                    torch.set_num_threads(self.threads)
                self._cal = {}
                self._cal[key] = CaptureCalibration(corr.lens, corr.flat, hw, self.device, source)
                release_heap()  # the temporaries of building the maps
        return self._cal[key]

    def correct(
        self,
        path: str,
        corr: Correction,
        hw: tuple[int, int],
        thumb_scale: float,
        work: str,
        k: int,
        lens: LensModel | None = None,
    ) -> tuple[tuple[np.ndarray, np.ndarray], float]:
        """Read frame ``k`` at ``path``, correct it (with ``lens`` in place of ``corr``'s, when given) and
        write its image ``(h, w, 3)`` uint8 and valid mask ``(h, w)`` uint8 to ``work``: its thumbnail
        ``thumb_scale``× with its valid mask, grey-level std."""
        from engine.calibrate.capture import edge_mask, is_identity
        from engine.stitch.render import frame_path

        if lens is not None:
            corr = replace(corr, lens=lens)

        raw = read_rgb(path)
        if raw.shape[:2] != hw:
            raise LodeInputError(
                path, f"frame is {raw.shape[0]}×{raw.shape[1]} but the section's first frame is {hw[0]}×{hw[1]}"
            )
        if is_identity(corr.lens, corr.flat):
            image, valid = raw, edge_mask(hw)
        else:
            image, valid = self.calibration(corr, hw, path)(raw, path)
        for kind, arr in (("image", image), ("valid", valid)):
            buf = io.BytesIO()
            np.save(buf, arr)
            atomic_write_bytes(frame_path(work, k, kind), buf.getvalue())
        thumb = cv2.resize(image, None, fx=thumb_scale, fy=thumb_scale, interpolation=cv2.INTER_AREA)
        tvalid = cv2.resize(valid, (thumb.shape[1], thumb.shape[0]), interpolation=cv2.INTER_AREA)
        std = grey_std(image, valid)
        del raw, image, valid
        release_heap()
        return (thumb, np.where(tvalid == 255, 255, 0).astype(np.uint8)), std


def read_section(section_dir: str | Path) -> SectionInput:
    """``<section>/tiles/*`` and, if present, ``<section>/positions.csv`` (pixels or micrometres, see
    the module's docstring); ``section_dir`` is a local path or URI."""
    sec = str(section_dir) if fs.is_uri(section_dir) else Path(section_dir)
    tile_dir = sec / "tiles" if isinstance(sec, Path) else fs.join(sec, "tiles")
    tiles = list_images(tile_dir)
    if not tiles:
        raise LodeInputError(tile_dir, f"no images ({', '.join(IMAGE_SUFFIXES)})")
    pos_file = sec / "positions.csv" if isinstance(sec, Path) else fs.join(sec, "positions.csv")
    if not fs.exists(pos_file):
        return SectionInput(fs.name(sec), tiles, None)
    xy, columns = read_positions(pos_file, [fs.name(t) for t in tiles])
    if columns == STAGE_COLUMNS:
        return SectionInput(fs.name(sec), tiles, None, xy)
    return SectionInput(fs.name(sec), tiles, xy)


def read_positions(path: str | Path, names: list[str]) -> tuple[np.ndarray, tuple[str, str, str]]:
    """The positions ``(n, 2)`` of the tiles ``names`` in ``path`` (a ``positions.csv``), and its columns:
    :data:`PIXEL_COLUMNS` or :data:`STAGE_COLUMNS`."""
    try:
        reader = csv.DictReader(io.StringIO(fs.read_bytes(path).decode(), newline=""))
        header = tuple(reader.fieldnames or ())
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LodeInputError(path, f"not a CSV text: {exc}") from exc
    columns = next((c for c in (PIXEL_COLUMNS, STAGE_COLUMNS) if sorted(header) == sorted(c)), None)
    if columns is None:
        raise LodeInputError(
            path,
            f"needs columns {', '.join(PIXEL_COLUMNS)} (pixels) or {', '.join(STAGE_COLUMNS)} (micrometres), "
            f"not {', '.join(header) or 'none'}",
        )
    _, x, y = columns
    try:
        found = [(r["file"], (float(r[x]), float(r[y]))) for r in reader]
    except (TypeError, ValueError, csv.Error) as exc:
        raise LodeInputError(path, f"needs numbers in {x} and {y} on every row: {exc}") from exc
    rows = dict(found)
    if len(rows) < len(found):
        listed = [n for n, _ in found]
        raise LodeInputError(path, f"{next(n for n in listed if listed.count(n) > 1)} is listed twice")
    missing = [n for n in names if n not in rows]
    if missing:
        raise LodeInputError(path, f"no position for {', '.join(missing[:5])}")
    xy = np.array([rows[n] for n in names], np.float64)
    if not np.all(np.isfinite(xy)):
        raise LodeInputError(path, "positions must be finite")
    if len(xy) > 1 and np.all(xy == xy[0]):
        raise LodeInputError(path, f"all {len(xy)} frames are at one position ({xy[0, 0]:g}, {xy[0, 1]:g})")
    _, first, counts = np.unique(xy, axis=0, return_index=True, return_counts=True)
    if np.any(counts > 1):
        p = xy[first[np.argmax(counts > 1)]]
        twins = [n for n, q in zip(names, xy) if np.array_equal(p, q)]
        raise LodeInputError(path, f"{twins[0]} and {twins[1]} are at one position ({p[0]:g}, {p[1]:g})")
    return xy, columns


def grey_std(image: np.ndarray, valid: np.ndarray) -> float:
    """Standard deviation (DN) of a corrected frame's grey levels ``(h, w, 3)`` over its ``valid`` pixels:
    near 0 for a blank frame (lens cap, lamp off, bare epoxy or glass once flat-field corrected)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    _, std = cv2.meanStdDev(grey, mask=valid)
    return float(std[0, 0])
