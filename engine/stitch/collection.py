"""A collection of sections to stitch, and the calibration that comes with it.

Layout: ``<collection>/<section_id>/tiles/*`` (+ ``positions.csv``, in pixels or stage micrometres:
:mod:`engine.stitch.frames`; optional crossed-polar captures ``<section_id>/xpl/<angle>/*``, one
folder per stage angle with one capture per tile under the tile's file stem, taken at the same stage
position: :mod:`engine.register.xpl_section`) and an optional ``<collection>/calibration/`` holding
``lens.json`` and ``flat.npz`` (fitted) or raw ``checkerboard/``, ``flat/`` and ``dark/`` frames
(fitted here on the fly), and ``pixel_size.json`` (``{"pixel_size_um": 0.65}``: the camera's pixel
size on the section; without it a section's stage positions in micrometres give one:
:mod:`engine.stitch.stage`).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path

from engine.calibrate.flat import FlatField, fit_flat
from engine.calibrate.lens import LensModel, fit_lens
from engine.errors import LodeInputError
from engine.io import fs
from engine.io.images import read_folder
from engine.raster.stage import release_heap
from engine.stitch.frames import Correction

CALIBRATION = "calibration"
PIXEL_SIZE = "pixel_size.json"


def load_pixel_size(collection: str | Path) -> float | None:
    """The collection's pixel size in µm (``calibration/pixel_size.json``), ``None`` when it has none."""
    path = fs.join(str(collection), CALIBRATION, PIXEL_SIZE)
    if not fs.exists(path):
        return None
    try:
        value = json.loads(fs.read_bytes(path))["pixel_size_um"]
        size = float(value)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LodeInputError(path, f'expected {{"pixel_size_um": <micrometres>}}: {exc}') from exc
    if not (math.isfinite(size) and size > 0):
        raise LodeInputError(path, f"pixel_size_um must be a positive number of micrometres, not {value!r}")
    return size


def section_dirs(collection: str | Path) -> list[Path] | list[str]:
    """Section folders (``Path`` objects, or URIs as text for an object-store collection)."""
    if fs.is_uri(collection):
        if not fs.isdir(collection):
            raise LodeInputError(collection, "no such collection folder")
        found = {p.rsplit("/", 1)[0] for p in fs.glob(fs.join(str(collection), "*", "tiles"))}
        uris = sorted(d for d in found if fs.name(d) != CALIBRATION)
        if not uris:
            raise LodeInputError(collection, "no <section>/tiles/ folders")
        return uris
    root = Path(collection)
    if not root.is_dir():
        raise LodeInputError(root, "no such collection folder")
    secs = sorted(p for p in root.iterdir() if p.is_dir() and p.name != CALIBRATION and (p / "tiles").is_dir())
    if not secs:
        raise LodeInputError(root, "no <section>/tiles/ folders")
    return secs


def load_correction(
    collection: str | Path,
    lens: str | Path | None = None,
    flat: str | Path | None = None,
    pattern: tuple[int, int] = (9, 6),
    use_lens: bool = True,
    use_flat: bool = True,
) -> Correction:
    """Lens and flat field from explicit files, else from ``<collection>/calibration``, else none.
    An object-store collection's calibration folder is read through a local copy."""
    if fs.is_uri(collection):
        with tempfile.TemporaryDirectory(prefix="lode-calibration-") as tmp:
            remote = fs.join(str(collection), CALIBRATION)
            local = fs.download(remote, tmp).parent if fs.isdir(remote) else Path(tmp)
            return load_correction(local, lens, flat, pattern, use_lens, use_flat)
    cal = Path(collection) / CALIBRATION
    lens_model: LensModel | None = None
    if use_lens:
        if lens is not None:
            lens_model = LensModel.load(lens)
        elif (cal / "lens.json").exists():
            lens_model = LensModel.load(cal / "lens.json")
        elif (cal / "checkerboard").is_dir():
            lens_model = fit_lens(read_folder(cal / "checkerboard"), pattern, cal / "checkerboard")
    ff: FlatField | None = None
    if use_flat:
        if flat is not None:
            ff = FlatField.load(flat)
        elif (cal / "flat.npz").exists():
            ff = FlatField.load(cal / "flat.npz")
        elif (cal / "flat").is_dir():
            darks = read_folder(cal / "dark") if (cal / "dark").is_dir() else None
            ff = fit_flat(read_folder(cal / "flat"), darks, source=cal)
    release_heap()  # the calibration frames read for the fits are freed: hand their heap back
    return Correction(lens_model, ff)


def section_bytes(section_dir: str | Path) -> int:
    """Bytes a section's corrected frames hold while it is prepared (RGB plus valid mask per tile);
    0 for a section whose tiles cannot be listed or read (it fails on its own when prepared)."""
    from engine.io.images import image_header
    from engine.stitch.frames import read_section

    try:
        tiles = read_section(section_dir).tiles
        h, w = image_header(tiles[0])[:2]
    except (LodeInputError, IndexError, OSError):
        return 0
    return len(tiles) * h * w * 4


def sections_in_flight(resources: Mapping[str, float], largest_section_bytes: int) -> int:
    """How many sections to prepare at once: one per two CPUs (a section's own frames already keep
    two busy; another section in flight adds its frames and workers, not speed), and with their
    frames (``largest_section_bytes`` each) within half the object store; at least one."""
    cpus = max(1, int(resources.get("CPU", 1)) // 2)
    store = float(resources.get("object_store_memory", 0.0))
    fit = int(0.5 * store // largest_section_bytes) if store and largest_section_bytes else cpus
    return max(1, min(cpus, fit))
