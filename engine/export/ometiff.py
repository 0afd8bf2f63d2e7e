"""Label images as OME-TIFF pyramids (``tifffile``), for tools that do not read OME-Zarr.

Level 0 is the main image; the store's further levels are its SubIFDs (the OME-TIFF pyramid
layout that QuPath, Bio-Formats and tifffile read as ``series[0].levels``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from engine.io.atomic import atomic_write_bytes

TILE = (256, 256)


def label_levels(labels: Any) -> list[np.ndarray]:
    """Every level ``(y, x)`` of an NGFF label group, finest first."""
    keys = sorted((k for k in labels.array_keys() if str(k).isdigit()), key=int)
    return [np.asarray(labels[k][:]) for k in keys]


def write_label_pyramid(
    levels: list[np.ndarray], path: str | Path, name: str, pixel_size_um: float | None = None
) -> str:
    """Write ``levels`` (uint8 ``(y, x)`` arrays, finest first) as one tiled, deflated OME-TIFF."""
    meta: dict[str, Any] = {"axes": "YX", "Name": name}
    if pixel_size_um:
        meta.update(
            PhysicalSizeX=pixel_size_um, PhysicalSizeY=pixel_size_um, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm"
        )
    buf = io.BytesIO()
    opts: dict[str, Any] = {"tile": TILE, "compression": "zlib", "photometric": "minisblack"}
    with tifffile.TiffWriter(buf, bigtiff=True, ome=True) as tif:
        tif.write(levels[0], subifds=len(levels) - 1, metadata=meta, **opts)
        for level in levels[1:]:
            tif.write(level, subfiletype=1, metadata=None, **opts)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)
