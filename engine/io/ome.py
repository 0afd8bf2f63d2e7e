"""OME-Zarr (NGFF 0.5, zarr v3 with sharding) images and label images.

Every array of a pyramid is sharded so that one output block owns whole shards at
every level: a block of ``block`` pixels at level 0 covers ``block / 2**k`` pixels
at level k, and that is the shard shape there. Writers fill whole blocks only, so
no two processes ever write the same shard (partial-shard writes from two processes
lose data).

A store of sections is an NGFF collection: its root lists the section images
(:func:`list_sections`), so ome-zarr-py's ``Reader`` and napari opened at the root reach every
section's image and label images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from engine.classes import ClassSet
from engine.errors import LodeInputError
from engine.io.layout import FULL_RESOLUTION, LABELS_GROUP, MINERALS, array_at, attrs_of, level

NGFF_VERSION = "0.5"
VOID = 255
"""Label value of pixels that hold no result (never written, or excluded): viewers and metrics
treat it as "no data"; no class set may use it."""


def _codec_args() -> dict[str, Any]:
    """Every chunk is zstd-compressed with its content checksum, and written even when it equals
    the fill value, so that a flipped byte raises on read and a missing chunk is visible."""
    return {"compressors": ZstdCodec(level=0, checksum=True), "config": {"write_empty_chunks": True}}


@dataclass(frozen=True)
class PyramidLayout:
    """Sharding of a pyramid: level-0 block (= shard) shape, chunk shape, level count."""

    block: tuple[int, int]
    chunk: int = 512
    levels: int = 3

    def __post_init__(self) -> None:
        step = 2 ** (self.levels - 1)
        for b in self.block:
            if b % step:
                raise ValueError(f"block {self.block} must be divisible by 2**(levels-1) = {step}")

    def level_shape(self, shape: tuple[int, int], k: int) -> tuple[int, int]:
        return (-(-shape[0] // 2**k), -(-shape[1] // 2**k))

    def level_block(self, k: int) -> tuple[int, int]:
        return (self.block[0] // 2**k, self.block[1] // 2**k)

    def level_chunk(self, k: int) -> tuple[int, int]:
        by, bx = self.level_block(k)
        return (_largest_divisor_at_most(by, self.chunk), _largest_divisor_at_most(bx, self.chunk))


def _largest_divisor_at_most(n: int, cap: int) -> int:
    for d in range(min(n, cap), 0, -1):
        if n % d == 0:
            return d
    return 1


def _axes(channels: bool, unit: str | None) -> list[dict[str, str]]:
    space = [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in ("y", "x")]
    return ([{"name": "c", "type": "channel"}] if channels else []) + space


def _multiscales(name: str, levels: int, channels: bool, pixel_size: float, unit: str | None) -> list[dict]:
    datasets = []
    for k in range(levels):
        s = pixel_size * 2**k
        scale = ([1.0] if channels else []) + [s, s]
        datasets.append({"path": level(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    return [{"name": name, "axes": _axes(channels, unit), "datasets": datasets}]


def create_image(
    parent: zarr.Group,
    name: str,
    shape: tuple[int, int, int],
    layout: PyramidLayout,
    dtype: Any = np.uint8,
    channel_names: Sequence[str] | None = None,
    pixel_size_um: float | None = None,
    attributes: dict | None = None,
    overwrite: bool = False,
    quantisation: tuple[float, float] | None = None,
) -> zarr.Group:
    """Create an NGFF multiscale image group ``(c, y, x)`` with empty sharded levels.

    ``quantisation`` ``(scale, offset)`` states on every level that a stored value ``q`` means
    ``q * scale + offset`` (CF ``scale_factor`` / ``add_offset``, which xarray decodes);
    :func:`dequantise` applies it."""
    c, h, w = shape
    grp = parent.create_group(name, overwrite=overwrite)
    for k in range(layout.levels):
        ly, lx = layout.level_shape((h, w), k)
        by, bx = layout.level_block(k)
        cy, cx = layout.level_chunk(k)
        grp.create_array(
            level(k),
            shape=(c, ly, lx),
            dtype=dtype,
            chunks=(c, cy, cx),
            shards=(c, by, bx),
            dimension_names=("c", "y", "x"),
            fill_value=0,
            **_codec_args(),
            attributes={"scale_factor": quantisation[0], "add_offset": quantisation[1]} if quantisation else None,
        )
    names = list(channel_names) if channel_names else [f"c{i}" for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} channel names for {c} channels")
    colours = ["FF0000", "00FF00", "0000FF"] if c == 3 else ["FFFFFF"] * c
    maxv = 255 if np.dtype(dtype) == np.uint8 else 65535 if np.dtype(dtype) == np.uint16 else 1.0
    ome: dict[str, Any] = {
        "version": NGFF_VERSION,
        "multiscales": _multiscales(
            name, layout.levels, True, pixel_size_um or 1.0, "micrometer" if pixel_size_um else None
        ),
        "omero": {
            "channels": [
                {
                    "label": n,
                    "color": colours[i],
                    "active": True,
                    "window": {"start": 0, "end": maxv, "min": 0, "max": maxv},
                }
                for i, n in enumerate(names)
            ],
        },
    }
    grp.attrs.update({"ome": ome, "lode": {"layout": layout_to_dict(layout), **(attributes or {})}})
    return grp


def create_labels(
    image: zarr.Group,
    name: str,
    classes: ClassSet,
    layout: PyramidLayout,
    pixel_size_um: float | None = None,
    overwrite: bool = False,
) -> zarr.Group:
    """Create an NGFF label image ``labels/<name>`` (y, x) uint8 with class colours and names;
    unwritten pixels read as :data:`VOID`, declared transparent and named "no data"."""
    if VOID in classes.codes:
        raise LodeInputError(classes.name, f"class code {VOID} is reserved for pixels without a result")
    h, w = array_at(image, FULL_RESOLUTION).shape[-2:]
    labels = image.require_group(LABELS_GROUP)
    existing = list(attrs_of(labels).get("ome", {}).get("labels", []))
    if name not in existing:
        existing.append(name)
    labels.attrs.update({"ome": {"version": NGFF_VERSION, "labels": existing}})
    grp = labels.create_group(name, overwrite=overwrite)
    for k in range(layout.levels):
        ly, lx = layout.level_shape((h, w), k)
        grp.create_array(
            level(k),
            shape=(ly, lx),
            dtype=np.uint8,
            chunks=layout.level_chunk(k),
            shards=layout.level_block(k),
            dimension_names=("y", "x"),
            fill_value=VOID,
            **_codec_args(),
        )
    ome: dict[str, Any] = {
        "version": NGFF_VERSION,
        "multiscales": _multiscales(
            name, layout.levels, False, pixel_size_um or 1.0, "micrometer" if pixel_size_um else None
        ),
        "image-label": {
            "version": NGFF_VERSION,
            "colors": [{"label-value": c.code, "rgba": [*c.color, 255]} for c in classes.classes]
            + [{"label-value": VOID, "rgba": [0, 0, 0, 0]}],
            "properties": [{"label-value": c.code, "name": c.name} for c in classes.classes]
            + [{"label-value": VOID, "name": "no data"}],
            "source": {"image": "../../"},
        },
    }
    grp.attrs.update(
        {"ome": ome, "lode": {"layout": layout_to_dict(layout), "classes": classes.to_dicts(), "void": VOID}}
    )
    return grp


def layout_to_dict(layout: PyramidLayout) -> dict:
    return {"block": list(layout.block), "chunk": layout.chunk, "levels": layout.levels}


def layout_of(group: zarr.Group) -> PyramidLayout:
    d = attrs_of(group)["lode"]["layout"]
    return PyramidLayout(tuple(d["block"]), d["chunk"], d["levels"])


def downsample(data: np.ndarray, kind: str) -> np.ndarray:
    """Halve the last two axes: the 2×2 mean (rounded half up) for images, the top-left sample
    for labels. Odd edges repeat their last row/column. Integer images stay integer throughout."""
    if kind == "label":
        return data[..., ::2, ::2]
    h, w = data.shape[-2:]
    if h % 2 or w % 2:
        pad = [(0, 0)] * (data.ndim - 2) + [(0, h % 2), (0, w % 2)]
        data = np.pad(data, pad, mode="edge")
    if data.dtype in (np.uint8, np.uint16):
        # OpenCV's area resize at exactly half size is (a + b + c + d + 2) >> 2, 15× faster than numpy here.
        flat = data.reshape(-1, *data.shape[-2:])
        size = (data.shape[-1] // 2, data.shape[-2] // 2)
        out = np.stack([cv2.resize(plane, size, interpolation=cv2.INTER_AREA) for plane in flat])
        return out.reshape(*data.shape[:-2], size[1], size[0])
    if np.issubdtype(data.dtype, np.integer) and data.dtype.itemsize <= 2:
        acc = data[..., 0::2, 0::2].astype(np.uint32)
        for dy, dx in ((0, 1), (1, 0), (1, 1)):
            acc += data[..., dy::2, dx::2]
        acc += 2
        acc //= 4
        return acc.astype(data.dtype)
    acc = data[..., 0::2, 0::2].astype(np.float64)
    for dy, dx in ((0, 1), (1, 0), (1, 1)):
        acc += data[..., dy::2, dx::2]
    return (acc / 4).astype(data.dtype)


def write_block(group: zarr.Group, data: np.ndarray, y0: int, x0: int, kind: str) -> None:
    """Write a level-0 block at (y0, x0) and its downsampled copies at every level.

    ``data`` is ``(c, h, w)`` for images and ``(h, w)`` for labels; (y0, x0) must sit on
    the block grid and the block must fill its shards (or reach the array edge).
    """
    layout = layout_of(group)
    by, bx = layout.block
    if y0 % by or x0 % bx:
        raise ValueError(f"block origin ({y0}, {x0}) is not on the {layout.block} block grid")
    for k in range(layout.levels):
        arr = array_at(group, level(k))
        ky, kx = y0 >> k, x0 >> k
        h, w = data.shape[-2:]
        full_h, full_w = arr.shape[-2:]
        if ky + h > full_h or kx + w > full_w:
            raise ValueError(f"block ({ky}, {kx}, {h}, {w}) outside level {k} of shape {arr.shape}")
        edge_ok_h = h == min(layout.level_block(k)[0], full_h - ky)
        edge_ok_w = w == min(layout.level_block(k)[1], full_w - kx)
        if not (edge_ok_h and edge_ok_w):
            raise ValueError(f"block at level {k} of shape {(h, w)} does not fill its shard")
        arr[..., ky : ky + h, kx : kx + w] = data
        if k + 1 < layout.levels:
            data = downsample(data, kind)


def open_store(path: str | Path, mode: Literal["r", "r+", "a", "w", "w-"] = "r") -> zarr.Group:
    """A zarr group from a local path or an fsspec URI (``s3://``, ``gs://``, ``file://``, ``memory://``)."""
    from engine.io import fs

    text = str(path)
    if mode in ("r", "r+") and not fs.exists(text):
        raise LodeInputError(text, "no such zarr store")
    try:
        return zarr.open_group(text if fs.is_uri(text) else fs.local(text), mode=mode)
    except Exception as exc:  # zarr raises several types for unreadable stores
        raise LodeInputError(text, f"cannot open as a zarr group: {exc}") from exc


def group_name(group: zarr.Group) -> str:
    """The last part of a group's location: of its path in the store, or else of the store's own root
    (a local folder, or an fsspec store's path): ``"secA"`` for ``s3://bucket/run.zarr/secA``."""
    where = group.path or str(getattr(group.store, "root", None) or getattr(group.store, "path", ""))
    return PurePosixPath(where.rstrip("/")).name or "image"


def image_groups(root: zarr.Group) -> dict[str, zarr.Group]:
    """Every NGFF multiscale image group directly below (or at) ``root``, by name."""
    out: dict[str, zarr.Group] = {}
    if "multiscales" in attrs_of(root).get("ome", {}):
        out[group_name(root)] = root
        return out
    for name, child in sorted(root.groups()):
        if "multiscales" in attrs_of(child).get("ome", {}):
            out[name] = child
    return out


def list_sections(root: zarr.Group) -> list[str]:
    """Make ``root`` an NGFF collection of the section images below it; returns their names.

    NGFF 0.5 has no collection of unrelated images: a plate needs ``row/column/field`` paths and
    equal field shapes, and the transitional ``bioformats2raw.layout`` is not followed by
    ome-zarr-py's ``Reader`` (0.18) and is not recommended for new data. That reader (and
    napari-ome-zarr, built on it) goes from a group to its children only through a ``labels``
    list, so the root lists its sections there; each listed group is then read by its own
    metadata, as the multiscale image it is, and its ``labels/`` group follows.

    Listed from the groups present, so call it where one process owns the root (the driver,
    after creating the sections), never from parallel writers.
    """
    names = list(image_groups(root))
    root.attrs.update({"ome": {"version": NGFF_VERSION, "labels": names}})
    return names


def quantisation_of(array: zarr.Array) -> tuple[float, float]:
    """``(scale, offset)`` stated on ``array`` by :func:`create_image`; ``(1, 0)`` when none is."""
    return float(attrs_of(array).get("scale_factor", 1.0)), float(attrs_of(array).get("add_offset", 0.0))


def dequantise(array: zarr.Array, stored: np.ndarray) -> np.ndarray:
    """``stored`` (values read from ``array``) as the float32 values they stand for."""
    scale, offset = quantisation_of(array)
    return stored.astype(np.float32) * np.float32(scale) + np.float32(offset)


def labels_of(image: zarr.Group, name: str = MINERALS) -> zarr.Group:
    return image[f"{LABELS_GROUP}/{name}"]  # type: ignore[return-value]
