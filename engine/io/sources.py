"""Section sources: where a section's pixels come from (an OME-Zarr image or an image file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import LodeInputError
from engine.io import fs
from engine.io.fs import is_uri
from engine.io.images import IMAGE_SUFFIXES, image_header, list_images, read_rgb
from engine.io.integrity import check_raster, is_complete, read_checked
from engine.io.layout import FULL_RESOLUTION, array_at, attrs_of, group_at
from engine.io.ome import group_name, open_store


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

    def check(self) -> None:
        """Refuse a stored image recorded as complete that lacks a shard (a deleted or lost file
        would read as black pixels and be measured)."""
        if self.kind == "zarr":
            root = open_store(self.path)
            group = group_at(root, self.group) if self.group else root
            if is_complete(group):
                check_raster(
                    group, array_at(group, FULL_RESOLUTION), f"{self.path}/{self.group}" if self.group else self.path
                )

    def stitch_report(self) -> dict | None:
        """The stitch report a stitched section carries (``attrs["lode"]["stitch"]``), else ``None``."""
        if self.kind != "zarr":
            return None
        root = open_store(self.path)
        group = group_at(root, self.group) if self.group else root
        return attrs_of(group).get("lode", {}).get("stitch")

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``(c, y1-y0, x1-x0)`` uint8."""
        if self.kind == "zarr":
            root = open_store(self.path)
            arr = array_at(group_at(root, self.group) if self.group else root, FULL_RESOLUTION)
            name = f"{self.path}/{self.group}" if self.group else self.path
            return read_checked(arr, (slice(None), slice(y0, y1), slice(x0, x1)), name)
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


def discover(inputs: list[str], failed: dict[str, LodeInputError] | None = None) -> list[SectionSource]:
    """Sections from OME-Zarr stores (local or URI), image folders and image files; errors name the input.

    With ``failed``, a section that cannot be planned (a truncated file, a bad header, unreadable
    zarr metadata) is recorded there under its section id instead of failing the whole collection.
    """
    out: list[SectionSource] = []

    def section(name: str, make) -> None:
        try:
            out.extend(make())
        except LodeInputError as exc:
            if failed is None:
                raise
            failed[name] = exc

    for item in inputs:
        if str(item).startswith("file://"):
            item = fs.local(item)
        if is_uri(item):
            if fs.exists(fs.join(item, "zarr.json")):
                section(fs.name(item).removesuffix(".zarr"), lambda item=item: _zarr_sources(str(item), failed))
            elif fs.isdir(item):
                files = list_images(item)
                if not files:
                    raise LodeInputError(item, f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
                for f in files:
                    section(Path(fs.name(f)).stem, lambda f=f: [_image_source(f)])
            elif Path(fs.name(item)).suffix.lower() in IMAGE_SUFFIXES and fs.exists(item):
                section(Path(fs.name(item)).stem, lambda item=item: [_image_source(item)])
            else:
                raise LodeInputError(item, "input not found (no OME-Zarr store, image folder or image file)")
            continue
        p = Path(item)
        if not p.exists():
            raise LodeInputError(p, "input not found")
        if p.is_dir() and (p / "zarr.json").exists():
            section(p.stem, lambda p=p: _zarr_sources(str(p), failed))
        elif p.is_dir():
            files = list_images(p)
            if not files:
                raise LodeInputError(p, f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            for f in files:
                section(f.stem, lambda f=f: [_image_source(f)])
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            section(p.stem, lambda p=p: [_image_source(p)])
        else:
            raise LodeInputError(p, "not an OME-Zarr store, image folder or image file")
    names = [s.section for s in out] + list(failed or {})
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LodeInputError(", ".join(inputs), f"duplicate section ids: {dupes}")
    return out


def _image_group(root, location: str, name: str):
    """The level-0 array of image group ``name`` of ``root`` (None when it is no NGFF image)."""
    where = f"{location}/{name}" if name else location
    try:
        grp = root[name] if name else root
        if "multiscales" not in grp.attrs.get("ome", {}):
            return None, None
        arr = grp[FULL_RESOLUTION]
    except Exception as exc:  # zarr and json raise several types for damaged metadata
        raise LodeInputError(where, f"unreadable zarr metadata: {exc}") from exc
    if arr.ndim != 3:
        raise LodeInputError(where, f"expected a (c, y, x) image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise LodeInputError(where, f"expected 8-bit image data, got {arr.dtype}")
    return grp, arr


def _zarr_sources(location: str, failed: dict[str, LodeInputError] | None = None) -> list[SectionSource]:
    """Every OME-NGFF image of a zarr store at a local path or an fsspec URI. Children are found by
    listing the store, so one child with damaged metadata does not hide the others."""
    root = open_store(location)
    if "multiscales" in attrs_of(root).get("ome", {}):
        grp, arr = _image_group(root, location, "")
        name = group_name(root)
        return [SectionSource(name, "zarr", location, "", arr.shape[1], arr.shape[2], arr.shape[0], _pixel_size(grp))]
    out = []
    for meta in fs.glob(fs.join(location, "*", "zarr.json")):
        name = meta.rsplit("/", 2)[-2]
        if name.startswith("."):  # a group still being written (stitch's partial sections)
            continue
        try:
            grp, arr = _image_group(root, location, name)
        except LodeInputError as exc:
            if failed is None:
                raise
            failed[name] = exc
            continue
        if grp is not None:
            out.append(
                SectionSource(name, "zarr", location, name, arr.shape[1], arr.shape[2], arr.shape[0], _pixel_size(grp))
            )
    if not out and not (failed and any(e.source.startswith(f"{location}/") for e in failed.values())):
        raise LodeInputError(location, "zarr store holds no OME-NGFF multiscale image")
    return out


def _image_source(path: Path | str) -> SectionSource:
    h, w, c = image_header(path)
    return SectionSource(Path(fs.name(path)).stem, "image", str(path), "", h, w, c)
