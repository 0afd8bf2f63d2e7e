"""Reading image files (local paths or fsspec URIs) with errors that name the file; writing them whole."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.errors import LodeInputError
from engine.io import fs
from engine.io.atomic import atomic_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")


def list_images(folder: str | Path) -> list:
    """Image files of a folder, sorted: ``Path`` objects, or URIs (text) for an object-store folder."""
    if fs.is_uri(folder):
        if not fs.isdir(folder):
            raise LodeInputError(folder, "no such folder")
        return [p for p in fs.glob(fs.join(str(folder), "*")) if _is_image(fs.name(p))]
    folder = Path(folder)
    if not folder.is_dir():
        raise LodeInputError(folder, "no such folder")
    return sorted(p for p in folder.iterdir() if _is_image(p.name))


def image_header(path: str | Path) -> tuple[int, int, int]:
    """``(height, width, channels)`` from the file header, checking it is 8-bit grey/RGB."""
    if fs.is_uri(path):
        if not fs.exists(path):
            raise LodeInputError(path, "image file not found")
        data = fs.read_bytes(path)
        if not data:
            raise LodeInputError(path, "image file is empty")
        return _header(path, io.BytesIO(data))
    path = Path(path)
    if not path.is_file():
        raise LodeInputError(path, "image file not found")
    if path.stat().st_size == 0:
        raise LodeInputError(path, "image file is empty")
    return _header(path, path)


def _header(path: str | Path, source) -> tuple[int, int, int]:
    try:
        with Image.open(source) as im:
            w, h = im.size
            mode = im.mode
            fmt = im.format
    except Exception as exc:
        raise LodeInputError(path, f"unreadable image: {exc}") from exc
    _check_complete(path, source, fmt)
    channels = {"L": 1, "P": 3, "RGB": 3, "RGBA": 4, "CMYK": 4}.get(mode)
    if channels is None:
        raise LodeInputError(path, f"unsupported image mode {mode!r} (expected 8-bit RGB or grey)")
    return h, w, channels


_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


def _check_complete(path: str | Path, source, fmt: str | None) -> None:
    """A truncated JPEG or PNG lacks its end marker: found from the file's tail, without decoding."""
    marker = _END_MARKERS.get(fmt or "")
    if marker is None:
        return
    with source if isinstance(source, io.BytesIO) else open(source, "rb") as f:
        f.seek(0, io.SEEK_END)
        f.seek(max(0, f.tell() - 4096))
        tail = f.read()
    if marker not in tail:
        raise LodeInputError(path, f"truncated {fmt} file (no end-of-image marker)")


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an 8-bit RGB image to ``(h, w, 3)`` uint8. Grey, RGBA, 16-bit, truncated and corrupt files
    raise: the whole file is decoded by PIL first (no truncated tail padded with grey) and a JPEG or
    PNG must end with its end-of-image marker."""
    if fs.is_uri(path):
        if not fs.exists(path):
            raise LodeInputError(path, "image file not found")
        data = fs.read_bytes(path)
    else:
        path = Path(path)
        if not path.is_file():
            raise LodeInputError(path, "image file not found")
        data = path.read_bytes()
    if not data:
        raise LodeInputError(path, "image file is empty")
    pixels = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.load()
            if fmt == "PNG" and im.mode == "RGB" and data[24] == 8:  # IHDR bit depth: 8-bit RGB, decoded as is
                pixels = np.array(im)
    except UnidentifiedImageError as exc:
        raise LodeInputError(path, "unreadable or corrupt image (not a recognised image format)") from exc
    except Exception as exc:
        raise LodeInputError(path, f"corrupt image data: {exc}") from exc
    _check_complete(path, io.BytesIO(data), fmt)
    if pixels is not None:  # lossless: PIL's pixels are OpenCV's, without decoding the file twice
        return pixels
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise LodeInputError(path, "unreadable or corrupt image")
    if img.dtype != np.uint8:
        raise LodeInputError(path, f"expected an 8-bit image, got {img.dtype}")
    if img.ndim != 3 or img.shape[2] != 3:
        ch = 1 if img.ndim == 2 else img.shape[2]
        raise LodeInputError(path, f"expected 3 colour channels (RGB), got {ch}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_image(path: str | Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """Write a local image file, format by suffix, ``image`` as OpenCV takes it (BGR or grey),
    under a temporary name then renamed. Raises ``OSError`` naming ``path`` if it cannot be encoded."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image, list(params)):
            raise OSError(f"cannot write {path}")


def read_folder(folder: str | Path) -> list[np.ndarray]:
    """Every image of a folder (:func:`list_images`) as :func:`read_rgb` reads it; an empty folder raises."""
    files = list_images(folder)
    if not files:
        raise LodeInputError(folder, f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    with ThreadPoolExecutor(max_workers=min(len(files), os.cpu_count() or 1)) as pool:
        return list(pool.map(read_rgb, files))


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a class-code mask (single channel uint8) from a local path or a URI."""
    try:
        data = fs.read_bytes(path)
    except OSError as exc:
        raise LodeInputError(path, f"mask missing or unreadable: {exc}") from exc
    m = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if m is None:
        raise LodeInputError(path, "mask missing, unreadable or corrupt")
    if m.ndim != 2 or m.dtype != np.uint8:
        raise LodeInputError(path, f"mask must be single-channel 8-bit, got shape {m.shape} {m.dtype}")
    if shape is not None and m.shape != tuple(shape):
        raise LodeInputError(path, f"mask size {m.shape} does not match its image {tuple(shape)}")
    return m
