"""Per-section exports of an analysed segmentation store: QuPath grain detections and the label
image as an OME-TIFF pyramid, written into ``OUT/exports/``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from engine.analyze.sections import classes_of, pixel_size_of
from engine.export.ometiff import label_levels, write_label_pyramid
from engine.export.qupath import grain_features
from engine.io import fs
from engine.io.atomic import atomic_write_text
from engine.io.ome import LABELS_GROUP, image_groups, open_store

EXPORTS = "exports"


def export_sections(
    store: str | Path, grains_path: str | Path, out: str | Path, label_name: str = "minerals"
) -> dict[str, dict[str, str]]:
    """Write ``<section>.grains.geojson`` (QuPath detections) and ``<section>.labels.ome.tif`` for
    every section of ``store`` that has the label image; returns their locations by section."""
    root = open_store(store)
    grains = pd.read_parquet(str(grains_path))
    written: dict[str, dict[str, str]] = {}
    for name, image in image_groups(root).items():
        path = f"{LABELS_GROUP}/{label_name}"
        if path not in image:
            continue
        labels = image[path]
        classes = classes_of(labels, f"{store}/{name}/{path}")  # type: ignore[arg-type]
        levels = label_levels(labels)
        colours = {c.code: tuple(c.color) for c in classes.classes}
        features = list(grain_features(levels[0], grains[grains.section == name], colours))  # type: ignore[arg-type]
        geojson = fs.join(out, EXPORTS, f"{name}.grains.geojson")
        atomic_write_text(geojson, json.dumps({"type": "FeatureCollection", "features": features}))
        tiff = write_label_pyramid(levels, fs.join(out, EXPORTS, f"{name}.labels.ome.tif"), name, pixel_size_of(image))
        written[name] = {"qupath_geojson": geojson, "labels_ome_tiff": tiff}
    return written
