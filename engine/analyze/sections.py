"""What ``lode analyze`` reads from a segmentation store: one section's labels and metadata."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from engine.classes import ClassSet
from engine.errors import LodeInputError
from engine.io.integrity import check_raster
from engine.io.layout import FULL_RESOLUTION, LABELS_GROUP, MINERALS, PROBABILITIES, array_at, attrs_of
from engine.io.ome import VOID, image_groups, labels_of, open_store


@dataclass(frozen=True)
class Section:
    """One section of a store: its label group, class set and pixel size."""

    name: str
    image: zarr.Group
    labels: zarr.Group
    classes: ClassSet
    pixel_size_um: float | None
    source: str
    missing: tuple[tuple[int, ...], ...] = ()
    """Origins of the label blocks never written (only when opened with ``allow_incomplete``)."""

    @property
    def level0(self) -> zarr.Array:
        return self.labels[FULL_RESOLUTION]  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.level0.shape)  # type: ignore[return-value]

    def probabilities(self) -> zarr.Array | None:
        """Level 0 of the quantised (c, y, x) class probabilities, if stored."""
        if PROBABILITIES not in self.image:
            return None
        node = self.image[PROBABILITIES]
        return node[FULL_RESOLUTION] if isinstance(node, zarr.Group) else node  # type: ignore[return-value]


def pixel_size_of(group: zarr.Group) -> float | None:
    """Level-0 pixel size in µm from NGFF multiscales, or None when the axes have no micrometre unit."""
    ms = attrs_of(group).get("ome", {}).get("multiscales") or attrs_of(group).get("multiscales")
    if not ms:
        return None
    axes = ms[0].get("axes", [])
    if not axes or any(a.get("type") == "space" and a.get("unit") not in ("micrometer",) for a in axes):
        return None
    for t in ms[0]["datasets"][0].get("coordinateTransformations", []):
        if t.get("type") == "scale":
            return float(t["scale"][-1])
    return None


def classes_of(labels: zarr.Group, source: str) -> ClassSet:
    """Class set of a label group: ``attrs["lode"]["classes"]``, else the NGFF image-label properties."""
    lode = attrs_of(labels).get("lode", {})
    if "classes" in lode:
        return ClassSet.from_dicts(lode["classes"], source=source)
    il = attrs_of(labels).get("ome", {}).get("image-label", {})
    props = {p["label-value"]: p.get("name", str(p["label-value"])) for p in il.get("properties", [])}
    colours = {c["label-value"]: c.get("rgba", [128, 128, 128, 255])[:3] for c in il.get("colors", [])}
    codes = sorted((set(props) | set(colours)) - {VOID})
    if not codes:
        raise LodeInputError(source, "label image carries no class names or colours")
    return ClassSet.from_dicts(
        [{"code": c, "name": props.get(c, str(c)), "color": colours.get(c, [128, 128, 128])} for c in codes],
        source=source,
    )


def open_sections(
    store: str | Path,
    label_name: str = MINERALS,
    allow_incomplete: bool = False,
    only: Sequence[str] | None = None,
) -> list[Section]:
    """Every section of a segmentation store that has a ``labels/<label_name>`` image (``only``: just these).

    Raises ``LodeInputError`` naming the section and its missing blocks when a section is
    incomplete (a killed or failed run) unless ``allow_incomplete``, and always when a section
    recorded as complete lacks a shard."""
    root = open_store(store)
    out = []
    for name, image in image_groups(root).items():
        if only is not None and name not in only:
            continue
        src = f"{store}/{name}"
        try:
            labels = labels_of(image, label_name)
        except KeyError:
            continue
        if FULL_RESOLUTION not in labels:
            raise LodeInputError(f"{src}/{LABELS_GROUP}/{label_name}", "label image has no level 0")
        arr = array_at(labels, FULL_RESOLUTION)
        if arr.ndim != 2 or arr.dtype != np.uint8:
            raise LodeInputError(
                f"{src}/{LABELS_GROUP}/{label_name}",
                f"expected a (y, x) uint8 label array, got {arr.dtype} {arr.shape}",
            )
        missing = check_raster(labels, arr, src, allow_incomplete)
        out.append(
            Section(
                name,
                image,
                labels,
                classes_of(labels, src),
                pixel_size_of(labels) or pixel_size_of(image),
                src,
                tuple(missing),
            )
        )
    if not out:
        raise LodeInputError(store, f"no section with labels/{label_name} found")
    return out
