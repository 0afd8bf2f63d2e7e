"""Per-section exports of an analysed segmentation store: QuPath grain detections and the label
image as an OME-TIFF pyramid, written into ``OUT/exports/``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from engine.analyze.sections import classes_of, pixel_size_of
from engine.export.ometiff import label_levels, write_label_pyramid
from engine.export.qupath import grain_features
from engine.io import fs
from engine.io.atomic import atomic_write_text
from engine.io.ome import LABELS_GROUP, image_groups, open_store

EXPORTS = "exports"


def export_sections(
    store: str | Path,
    grains: pd.DataFrame | str | Path,
    out: str | Path,
    label_name: str = "minerals",
    *,
    sections: Sequence[str] | None = None,
    executor: str = "serial",
) -> dict[str, dict[str, str]]:
    """Write ``<section>.grains.geojson`` (QuPath detections) and ``<section>.labels.ome.tif`` for
    every section of ``store`` (``sections``: just these) that has the label image; returns their
    locations by section. ``grains``: the grain table (``grains.parquet`` or its rows of these sections).
    ``executor="ray"``: one Ray task per section, side by side."""
    if executor == "ray":
        import ray

        return {n: ray.get(ref) for n, ref in submit_exports(store, grains, out, label_name, sections=sections).items()}
    if executor != "serial":
        raise ValueError(f"unknown executor {executor!r} (serial or ray)")
    return {n: export_section(*args) for n, args in _work(store, grains, out, label_name, sections).items()}


def submit_exports(
    store: str | Path,
    grains: pd.DataFrame | str | Path,
    out: str | Path,
    label_name: str = "minerals",
    *,
    sections: Sequence[str] | None = None,
) -> dict[str, Any]:
    """:func:`export_sections` on Ray without waiting: each section's task (``ray.get`` gives its
    exports' locations, or raises its error)."""
    import ray

    task = ray.remote(num_cpus=1)(export_section).options(**fs.ray_remote_args())
    return {n: task.remote(*args) for n, args in _work(store, grains, out, label_name, sections).items()}


def _work(
    store: str | Path,
    grains: pd.DataFrame | str | Path,
    out: str | Path,
    label_name: str,
    sections: Sequence[str] | None,
) -> dict[str, tuple]:
    if not isinstance(grains, pd.DataFrame):
        grains = pd.read_parquet(str(grains))
    path = f"{LABELS_GROUP}/{label_name}"
    names = [
        n
        for n, image in image_groups(open_store(store)).items()
        if path in image and (sections is None or n in sections)
    ]
    return {n: (str(store), n, grains[grains.section == n], str(out), label_name) for n in names}


def export_section(store: str, name: str, grains: pd.DataFrame, out: str, label_name: str) -> dict[str, str]:
    """The exports of section ``name`` from its rows of the grain table."""
    image = image_groups(open_store(store))[name]
    path = f"{LABELS_GROUP}/{label_name}"
    labels = image[path]
    classes = classes_of(labels, f"{store}/{name}/{path}")  # type: ignore[arg-type]
    levels = label_levels(labels)
    colours = {c.code: tuple(c.color) for c in classes.classes}
    features = list(grain_features(levels[0], grains, colours))  # type: ignore[arg-type]
    geojson = fs.join(out, EXPORTS, f"{name}.grains.geojson")
    atomic_write_text(geojson, json.dumps({"type": "FeatureCollection", "features": features}))
    tiff = write_label_pyramid(levels, fs.join(out, EXPORTS, f"{name}.labels.ome.tif"), name, pixel_size_of(image))
    return {"qupath_geojson": geojson, "labels_ome_tiff": tiff}
