"""Descriptions of a store's sections for the page: pyramid levels (paths, shapes, chunk shapes)
of the image, the mineral labels and the probabilities, class colours with area %, pixel size,
stitch seams and flagged frames."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from engine.analyze.sections import classes_of, pixel_size_of
from engine.io.ome import LABELS_GROUP, VOID, image_groups, open_store

PROBABILITIES = "probabilities"
SEAMS = "seam_labels"


def _levels(group: Any, prefix: str) -> list[dict]:
    keys = sorted((k for k in group.array_keys() if str(k).isdigit()), key=int)
    out = []
    for k in keys:
        arr = group[k]
        out.append({"path": f"{prefix}/{k}", "shape": list(arr.shape), "chunks": list(arr.chunks)})
    return out


def _area_percent(labels: Any, codes: list[int], stats: pd.DataFrame | None, section: str) -> dict[int, float]:
    """Area % per class: ``statistics.parquet`` when it has the section, else counted on the
    coarsest level (void excluded)."""
    if stats is not None:
        s = stats[(stats.statistic == "area_fraction") & (stats.section == section)]
        if len(s):
            return {int(c): 100.0 * float(v) for c, v in zip(s.class_code, s.value)}
    coarse = np.asarray(labels[str(max(int(k) for k in labels.array_keys() if str(k).isdigit()))][:])
    counts = np.bincount(coarse.ravel(), minlength=256)
    total = counts.sum() - counts[VOID]
    return {c: 100.0 * float(counts[c]) / total if total else 0.0 for c in codes}


def describe_sections(store: str, stats: pd.DataFrame | None = None) -> list[dict]:
    root = open_store(store)
    out = []
    for name, group in image_groups(root).items():
        image: Any = group
        levels = _levels(image, name)
        c, h, w = levels[0]["shape"]
        channels = [
            ch.get("label", f"c{i}") for i, ch in enumerate(image.attrs["ome"].get("omero", {}).get("channels", []))
        ]
        desc: dict[str, Any] = {
            "name": name,
            "width": w,
            "height": h,
            "pixel_size_um": pixel_size_of(image),
            "image": {"levels": levels, "channels": channels or [f"c{i}" for i in range(c)]},
            "labels": None,
            "probabilities": None,
            "seams": None,
            "flagged": [],
        }
        lpath = f"{LABELS_GROUP}/minerals"
        if lpath in image:
            labels = image[lpath]
            classes = classes_of(labels, f"{store}/{name}/{lpath}")
            area = _area_percent(labels, classes.codes, stats, name)
            desc["labels"] = {
                "levels": _levels(labels, f"{name}/{lpath}"),
                "void": VOID,
                "classes": [
                    {"code": k.code, "name": k.name, "color": list(k.color), "area_pct": area.get(k.code, 0.0)}
                    for k in classes.classes
                ],
            }
        if PROBABILITIES in image:
            probs = image[PROBABILITIES]
            pch = [ch.get("label") for ch in probs.attrs["ome"]["omero"]["channels"]]
            dtype = np.dtype(probs["0"].dtype)
            unquantised = 1.0 / np.iinfo(dtype).max if dtype.kind in "ui" else 1.0
            scale = float(probs["0"].attrs.get("scale_factor", unquantised))
            desc["probabilities"] = {
                "levels": _levels(probs, f"{name}/{PROBABILITIES}"),
                "channels": pch,
                "scale": scale,
            }
        stitch = image.attrs.get("lode", {}).get("stitch", {})
        if SEAMS in image:
            desc["seams"] = {"url": f"api/seams/{name}.png", "shape": list(image[SEAMS].shape)}
        desc["flagged"] = list(stitch.get("flagged", []))
        out.append(desc)
    return out


def seams_png(store: str, section: str) -> bytes:
    """Seam boundaries of a stitched section as an RGBA PNG at the seam map's resolution."""
    from PIL import Image

    from engine.stitch.seams import seam_boundary

    seams: Any = open_store(store)[f"{section}/{SEAMS}"]
    labels = np.asarray(seams[:])
    rgba = np.zeros((*labels.shape, 4), np.uint8)
    rgba[seam_boundary(labels)] = (0, 255, 255, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()
