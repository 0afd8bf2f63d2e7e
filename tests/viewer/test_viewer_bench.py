"""The chunk accounting of ``benchmarks.viewer``: a logged byte range maps to the chunk whose data
it holds, and the chunk counts of the 12000×8000 pyramid."""

from __future__ import annotations

import numpy as np
from numcodecs import Zstd

from benchmarks.viewer import LABELS, chunks_in_store, chunks_in_view, chunks_read, write_store
from engine.io.ome import open_store


def test_each_byte_range_maps_to_the_chunk_it_holds(tmp_path):
    store = tmp_path / "lode.ome.zarr"
    write_store(store, "s", 1100, 1600)
    labels = open_store(store)[f"s/{LABELS}0"][:]
    shard = store / "s" / LABELS / "0" / "c" / "0" / "0"
    raw = shard.read_bytes()
    index = np.frombuffer(raw[-(16 * 16 + 4) : -4], "<u8").reshape(-1, 2)
    found = set()
    for offset, nbytes in index[index[:, 0] != 2**64 - 1]:
        line = f"GET /store/s/{LABELS}0/c/0/0 bytes={offset}-{offset + nbytes - 1} 206 {nbytes}"
        ((key, chunks),) = chunks_read(store, "s", [line]).items()
        ((r, c),) = chunks
        data = np.frombuffer(Zstd().decode(raw[offset : offset + nbytes]), np.uint8).reshape(512, 512)
        want = labels[r * 512 : (r + 1) * 512, c * 512 : (c + 1) * 512]
        assert key == (LABELS, 0) and np.array_equal(data[: want.shape[0], : want.shape[1]], want), (r, c)
        found.add((r, c))
    assert found == {(r, c) for r in range(3) for c in range(4)}


def test_chunk_counts_of_the_large_pyramid():
    shape = (8000, 12000)
    assert chunks_in_store(shape) == 2 * (16 * 24 + 8 * 12 + 4 * 6 + 4 * 6)
    assert chunks_in_view(shape, 0, (6100, 3900, 700, 640)) == {(r, c) for r in (7, 8) for c in (11, 12, 13)}
    assert chunks_in_view(shape, 3, (6100, 3900, 700, 640)) == {(1, 2), (1, 3), (2, 2), (2, 3)}
