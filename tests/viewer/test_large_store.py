"""A 12000×8000 section opens in headless Chromium in under 3 s to a full first image, and a pan
to a new region reads only the chunks that region shows (from the server's request log)."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from engine.classes import LUMENSTONE
from engine.io.integrity import mark_complete
from engine.io.ome import PyramidLayout, create_image, create_labels, layout_of, open_store, write_block
from tests.viewer.conftest import ViewProcess

pytestmark = pytest.mark.slow
H, W, BLOCK = 8000, 12000, 2048
VIEW = (6100, 3900, 700, 640)  # x, y, w, h of the region panned to (level-0 pixels)
_SHARD = re.compile(r"GET /store/big/((?:labels/minerals/)?)(\d)/c/((?:\d+/?)+) bytes=(\d+)-(\d+) 206")


def write_big(path) -> None:
    root = open_store(path, mode="w")
    layout = PyramidLayout((BLOCK, BLOCK), chunk=512, levels=4)
    img = create_image(root, "big", (3, H, W), layout, pixel_size_um=0.5)
    lbl = create_labels(img, "minerals", LUMENSTONE, layout, pixel_size_um=0.5)
    for y0 in range(0, H, BLOCK):
        for x0 in range(0, W, BLOCK):
            h, w = min(BLOCK, H - y0), min(BLOCK, W - x0)
            yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w]
            lab = (((yy // 97) + (xx // 131)) % 6 + 1).astype(np.uint8)
            write_block(img, np.stack([(xx % 256), (yy % 256), (xx + yy) % 256]).astype(np.uint8), y0, x0, "image")
            write_block(lbl, lab, y0, x0, "label")
    mark_complete(lbl)
    mark_complete(img)


def chunk_of(store, array_path: str, shard: list[int], offset: int) -> tuple[int, int]:
    """Inner chunk (row, col) at level coordinates, of the byte range starting at ``offset`` in a shard."""
    arr = open_store(store)[array_path]
    cy, cx = arr.chunks[-2:]
    sy, sx = arr.shards[-2:]
    n = (sy // cy) * (sx // cx)
    raw = (store / array_path / "c" / "/".join(map(str, shard))).read_bytes()
    index = np.frombuffer(raw[-(16 * n + 4) : -4], "<u8").reshape(sy // cy, sx // cx, 2)
    iy, ix = (int(v[0]) for v in np.nonzero(index[..., 0] == offset))
    return shard[-2] * (sy // cy) + iy, shard[-1] * (sx // cx) + ix


def test_large_store_opens_fast_and_pans_by_chunk(browser, tmp_path_factory):
    out = tmp_path_factory.mktemp("big")
    store = out / "lode.ome.zarr"
    t = time.perf_counter()
    write_big(store)
    written_s = time.perf_counter() - t
    view = ViewProcess(out, out / "requests.log")
    try:
        browser.goto(view.url)
        first_ms = browser.evaluate("lode.ready.then(() => lode.idle()).then(() => performance.now())")
        assert browser.console_errors() == []
        assert first_ms < 3000
        n_first = len(view.requests())
        x, y, w, h = VIEW
        browser.evaluate(f"lode.showImageRect({x}, {y}, {w}, {h}); lode.idle()")
        panned = view.requests()[n_first:]
        layout = layout_of(open_store(store)["big"])
        seen: dict[tuple[str, int], set[tuple[int, int]]] = {}
        for line in panned:
            m = _SHARD.match(line)
            if not m or line.split()[2].startswith("bytes=-"):
                continue  # shard indexes (suffix ranges) and metadata
            prefix, level, shard = m.group(1), int(m.group(2)), [int(v) for v in m.group(3).strip("/").split("/")]
            chunk = chunk_of(store, f"big/{prefix}{level}", shard, int(m.group(4)))
            seen.setdefault((prefix, level), set()).add(chunk)
        assert seen, panned
        needed_total = 0
        for (prefix, level), chunks in seen.items():
            cy, cx = layout.level_chunk(level)
            s = 2**level
            rows = range(y // s // cy, -(-(y + h) // s // cy))
            cols = range(x // s // cx, -(-(x + w) // s // cx))
            needed = {(r, c) for r in rows for c in cols}
            assert chunks <= needed, (prefix, level, sorted(chunks - needed))
            needed_total += len(needed)
        assert ((""), 0) in seen and (("labels/minerals/"), 0) in seen, seen.keys()
        total_chunks = 2 * sum(
            -(-H // 2**k // layout.level_chunk(k)[0]) * -(-W // 2**k // layout.level_chunk(k)[1]) for k in range(4)
        )
        print(
            json.dumps(
                {
                    "store": [H, W],
                    "write_s": round(written_s, 1),
                    "first_image_ms": round(first_ms),
                    "requests_first_view": n_first,
                    "chunks_read_on_pan": sum(map(len, seen.values())),
                    "chunks_in_view_all_levels": needed_total,
                    "chunks_in_store": total_chunks,
                }
            )
        )
    finally:
        view.stop()
