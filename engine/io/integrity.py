"""Completeness and integrity of Lode's stores: a reader refuses what is incomplete or damaged.

A raster written block by block is marked complete in its own attributes (``lode.complete``)
only when every block is done. Every chunk is checksummed and stored even when it equals the
fill value (:func:`engine.io.ome.create_image`), so a flipped byte fails to decode and a
missing shard is visible in the store's listing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from engine.errors import LodeInputError
from engine.io.layout import attrs_of


def mark_complete(group: zarr.Group, complete: bool = True) -> None:
    group.attrs["lode"] = {**attrs_of(group).get("lode", {}), "complete": complete}


def is_complete(group: zarr.Group) -> bool:
    return bool(attrs_of(group).get("lode", {}).get("complete", False))


def missing_shards(array: zarr.Array) -> list[tuple[int, ...]]:
    """Shard-grid origins (in array elements, last two axes) of the shards not in the store."""
    from zarr.core.array import _shards_initialized
    from zarr.core.sync import sync

    stored = set(sync(_shards_initialized(array.async_array)))
    shard = array.shards or array.chunks
    grid = [range(0, n, s) for n, s in zip(array.shape, shard)]
    out = []
    for key, origin in zip(
        array._iter_shard_keys(), np.array(np.meshgrid(*grid, indexing="ij")).reshape(len(grid), -1).T
    ):
        if key not in stored:
            out.append(tuple(int(v) for v in origin[-2:]))
    return out


def _describe(blocks: list[tuple[int, ...]], limit: int = 4) -> str:
    shown = ", ".join(f"({y}, {x})" for y, x in blocks[:limit])
    return shown + (f" and {len(blocks) - limit} more" if len(blocks) > limit else "")


def check_raster(
    group: zarr.Group, array: zarr.Array, source: str, allow_incomplete: bool = False
) -> list[tuple[int, ...]]:
    """Refuse a raster that is incomplete (unless ``allow_incomplete``) or whose complete record
    lacks a shard. Returns the origins of the missing blocks (empty when whole).

    Raises:
        LodeInputError: naming ``source`` and the missing blocks.
    """
    missing = missing_shards(array)
    if is_complete(group):
        if missing:
            raise LodeInputError(
                source,
                f"damaged: {len(missing)} shard(s) of {array.path} missing from a complete "
                f"record at (y, x) {_describe(missing)}",
            )
        return []
    if not allow_incomplete:
        raise LodeInputError(
            source,
            f"incomplete: {len(missing)} block(s) never written at (y, x) "
            f"{_describe(missing)} (rerun the job to finish it, or pass "
            f"--allow-incomplete to measure only the complete blocks)",
        )
    return missing


def read_checked(array: zarr.Array, selection: Any, source: str) -> np.ndarray:
    """``array[selection]``, with a chunk that fails to decode (checksum, truncation) reported
    as a ``LodeInputError`` naming the array and the region."""
    try:
        return np.asarray(array[selection])
    except Exception as exc:  # codecs raise their own types
        raise LodeInputError(
            source,
            f"damaged chunk of {array.path} in region {_region(selection)} (corrupt "
            f"pixels): {type(exc).__name__}: {exc}",
        ) from exc


def _region(selection: Any) -> str:
    parts = selection if isinstance(selection, tuple) else (selection,)
    return "[" + ", ".join(f"{s.start or 0}:{s.stop}" if isinstance(s, slice) else str(s) for s in parts) + "]"
