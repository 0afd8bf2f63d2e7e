"""Section sources: where a section's pixels come from (an OME-Zarr image or an image file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import LodeInputError
from engine.io.images import IMAGE_SUFFIXES, image_header, list_images, read_rgb
from engine.io.ome import image_groups, open_store


@dataclass(frozen=True)
class SectionSource:
    """One section to process: ``kind`` is ``zarr`` (store + group path) or ``image`` (a file)."""

    section: str
    kind: str
    path: str
    group: str
    height: int
    width: int
    channels: int
    pixel_size_um: float | None = None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``(c, y1-y0, x1-x0)`` uint8."""
        if self.kind == "zarr":
            root = open_store(self.path)
            arr = (root[self.group] if self.group else root)["0"]
            try:
                return np.asarray(arr[:, y0:y1, x0:x1])
            except (RuntimeError, ValueError) as exc:  # what zarr's codecs raise for corrupt chunks
                name = f"{self.path}/{self.group}" if self.group else self.path
                raise LodeInputError(name, f"corrupt pixels in rows {y0}:{y1}, columns {x0}:{x1}: {exc}") from exc
        img = read_rgb(self.path)
        if img.shape[:2] != (self.height, self.width):
            raise LodeInputError(self.path, f"image changed size since planning: {img.shape[:2]}")
        return np.moveaxis(img[y0:y1, x0:x1], -1, 0)


def _pixel_size(group) -> float | None:
    ms = group.attrs.get("ome", {}).get("multiscales", [{}])[0]
    axes = ms.get("axes", [])
    if not any(a.get("unit") == "micrometer" for a in axes):
        return None
    for t in ms.get("datasets", [{}])[0].get("coordinateTransformations", []):
        if t.get("type") == "scale":
            return float(t["scale"][-1])
    return None


def discover(inputs: list[str]) -> list[SectionSource]:
    """Sections from OME-Zarr stores, image folders and image files; errors name the input."""
    out: list[SectionSource] = []
    for item in inputs:
        if "://" in str(item):
            out.extend(_zarr_sources(str(item)))
            continue
        p = Path(item)
        if not p.exists():
            raise LodeInputError(p, "input not found")
        if p.is_dir() and (p / "zarr.json").exists():
            out.extend(_zarr_sources(str(p)))
        elif p.is_dir():
            files = list_images(p)
            if not files:
                raise LodeInputError(p, f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(_image_source(f) for f in files)
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(_image_source(p))
        else:
            raise LodeInputError(p, "not an OME-Zarr store, image folder or image file")
    names = [s.section for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LodeInputError(", ".join(inputs), f"duplicate section ids: {dupes}")
    return out


def _zarr_sources(location: str) -> list[SectionSource]:
    """Every OME-NGFF image of a zarr store at a local path or an fsspec URI."""
    root = open_store(location)
    groups = image_groups(root)
    if not groups:
        raise LodeInputError(location, "zarr store holds no OME-NGFF multiscale image")
    out = []
    for name, grp in groups.items():
        arr = grp["0"]
        if arr.ndim != 3:
            raise LodeInputError(f"{location}/{name}", f"expected a (c, y, x) image, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise LodeInputError(f"{location}/{name}", f"expected 8-bit image data, got {arr.dtype}")
        group = "" if grp.path == root.path else grp.path
        out.append(SectionSource(name, "zarr", location, group, arr.shape[1], arr.shape[2], arr.shape[0],
                                 _pixel_size(grp)))
    return out


def _image_source(path: Path) -> SectionSource:
    h, w, c = image_header(path)
    return SectionSource(path.stem, "image", str(path), "", h, w, c)
