"""``lode view`` on a 12000×8000 section store in headless Chromium: the first image, and what a pan reads.

    python -m benchmarks.viewer --json OUT [--work DIR] [--size HxW] [--small HxW] [--repeats N]

Writes a sharded image + label pyramid (4 levels, shards of 2048², chunks of 512) and a small
store of the same layout that fits the page, starts ``lode view`` on each (``python -m jobs.view
TARGET --port 0 --request-log LOG``) and drives headless Debian ``chromium`` (1000×700 page) over
the DevTools protocol (:mod:`engine.view.headless`). Measured in one run:

- ``first_image_ms``: navigation start to every visible image and label tile drawn
  (``performance.now()`` when ``lode.ready`` and ``lode.idle()`` resolve), median of ``--repeats``
  navigations alternating with the small store's (``small.first_image_ms``, after one discarded
  warm-up navigation): ``first_image_vs_small`` is what the size of the store costs the first view;
- the requests and bytes of the first view (``bytes_first_view_vs_store``: store bytes read
  against the store's size on disk);
- a pan to a new 700×640 region: the chunks it reads (each byte range mapped to its inner chunk
  through the shard index) against the chunks intersecting the region at the levels read and at
  all levels, and the chunks in the store; ``pan.chunks_outside_view`` must be 0;
- the machine: CPU count and load average at the start and the end (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

BLOCK, CHUNK, LEVELS = 2048, 512, 4
PAN = (6100 / 12000, 3900 / 8000, 700, 640)  # x, y of the region panned to as fractions of the store; w, h in px
LABELS = "labels/minerals/"

Chunks = dict[tuple[str, int], set[tuple[int, int]]]  # (array prefix, level) -> inner chunks (row, col)


def write_store(path: Path, name: str, h: int, w: int) -> None:
    """A section ``name`` of ``h`` × ``w``: an RGB ramp image and 6 labels in 97×131 px cells, complete."""
    from engine.classes import LUMENSTONE
    from engine.io.integrity import mark_complete
    from engine.io.ome import PyramidLayout, create_image, create_labels, open_store, write_block

    root = open_store(path, mode="w")
    layout = PyramidLayout((BLOCK, BLOCK), chunk=CHUNK, levels=LEVELS)
    img = create_image(root, name, (3, h, w), layout, pixel_size_um=0.5)
    lbl = create_labels(img, "minerals", LUMENSTONE, layout, pixel_size_um=0.5)
    for y0 in range(0, h, BLOCK):
        for x0 in range(0, w, BLOCK):
            bh, bw = min(BLOCK, h - y0), min(BLOCK, w - x0)
            yy, xx = np.mgrid[y0 : y0 + bh, x0 : x0 + bw]
            lab = (((yy // 97) + (xx // 131)) % 6 + 1).astype(np.uint8)
            write_block(img, np.stack([(xx % 256), (yy % 256), (xx + yy) % 256]).astype(np.uint8), y0, x0, "image")
            write_block(lbl, lab, y0, x0, "label")
    mark_complete(lbl)
    mark_complete(img)


def chunk_of(store: Path, array_path: str, shard: list[int], offset: int) -> tuple[int, int]:
    """Inner chunk (row, col) at level coordinates of the byte range starting at ``offset`` in a shard."""
    import zarr

    from engine.io.ome import open_store

    arr = open_store(store)[array_path]
    if not isinstance(arr, zarr.Array) or arr.shards is None:
        raise ValueError(f"{store / array_path}: not a sharded array")
    cy, cx = arr.chunks[-2:]
    sy, sx = arr.shards[-2:]
    ny, nx = sy // cy, sx // cx
    with open(store / array_path / "c" / "/".join(map(str, shard)), "rb") as f:
        f.seek(-(16 * ny * nx + 4), os.SEEK_END)
        index = np.frombuffer(f.read(16 * ny * nx), "<u8").reshape(ny, nx, 2)
    hits = np.argwhere(index[..., 0] == offset)
    if len(hits) != 1:
        raise ValueError(f"{array_path} shard {shard}: no chunk starts at byte {offset}")
    iy, ix = (int(v) for v in hits[0])
    return shard[-2] * ny + iy, shard[-1] * nx + ix


def chunks_read(store: Path, name: str, lines: Iterable[str]) -> Chunks:
    """The inner chunks whose bytes the logged requests read (shard-index and metadata reads left out)."""
    shard_range = re.compile(rf"GET /store/{re.escape(name)}/((?:{LABELS})?)(\d+)/c/((?:\d+/?)+) bytes=(\d+)-\d+ 206")
    seen: Chunks = {}
    for line in lines:
        m = shard_range.match(line)
        if not m:
            continue  # shard indexes (suffix ranges), metadata, the page
        prefix, level, shard = m.group(1), int(m.group(2)), [int(v) for v in m.group(3).strip("/").split("/")]
        chunk = chunk_of(store, f"{name}/{prefix}{level}", shard, int(m.group(4)))
        seen.setdefault((prefix, level), set()).add(chunk)
    return seen


def chunks_in_view(shape: tuple[int, int], level: int, rect: tuple[int, int, int, int]) -> set[tuple[int, int]]:
    """Inner chunks of a level intersecting the level-0 rectangle ``rect`` (x, y, w, h)."""
    from engine.io.ome import PyramidLayout

    layout = PyramidLayout((BLOCK, BLOCK), chunk=CHUNK, levels=LEVELS)
    (cy, cx), (lh, lw), s = layout.level_chunk(level), layout.level_shape(shape, level), 2**level
    x, y, w, h = rect
    rows = range(y // s // cy, min(-(-(y + h) // s // cy), -(-lh // cy)))
    cols = range(x // s // cx, min(-(-(x + w) // s // cx), -(-lw // cx)))
    return {(r, c) for r in rows for c in cols}


def chunks_in_store(shape: tuple[int, int]) -> int:
    """Inner chunks of the image and label pyramids together."""
    return 2 * sum(len(chunks_in_view(shape, k, (0, 0, shape[1], shape[0]))) for k in range(LEVELS))


def pan_rect(shape: tuple[int, int]) -> tuple[int, int, int, int]:
    fx, fy, w, h = PAN
    return round(fx * shape[1]), round(fy * shape[0]), int(w), int(h)


def _store_bytes(lines: Iterable[str]) -> int:
    return sum(int(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith("GET /store/"))


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def first_view(browser, view) -> dict:
    """Navigate to ``view`` and wait until every visible tile is drawn."""
    n0 = len(view.requests())
    browser.goto(view.url)
    ms = browser.evaluate("lode.ready.then(() => lode.idle()).then(() => performance.now())")
    if browser.evaluate("location.href") != view.url:
        raise RuntimeError(f"timed a page other than {view.url}")
    lines = view.requests()[n0:]
    return {
        "ms": ms,
        "requests": len(lines),
        "store_bytes_read": _store_bytes(lines),
        "console_errors": browser.console_errors(),
    }


def _summary(runs: list[dict]) -> dict:
    return {
        "first_image_ms": round(statistics.median(r["ms"] for r in runs)),
        "first_image_ms_runs": [round(r["ms"]) for r in runs],
        "requests_first_view": runs[-1]["requests"],
        "store_bytes_read_first_view": runs[-1]["store_bytes_read"],
    }


def _shape(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def measure(work: Path, size: tuple[int, int], small: tuple[int, int], repeats: int) -> dict:
    from engine.view.headless import Chromium, ViewProcess

    load_start = os.getloadavg()
    t = time.perf_counter()
    stores = {}
    for name, shape in (("big", size), ("small", small)):
        stores[name] = work / name / "lode.ome.zarr"
        write_store(stores[name], name, *shape)
    write_s = time.perf_counter() - t
    for name in stores:
        (work / f"{name}.requests.log").unlink(missing_ok=True)
    with (
        ViewProcess(work / "big", work / "big.requests.log") as big,
        ViewProcess(work / "small", work / "small.requests.log") as little,
        Chromium(work / "chromium-profile") as browser,
    ):
        errors = first_view(browser, little)["console_errors"]  # warm-up: JIT, the server's first reads
        runs: dict[str, list[dict]] = {"big": [], "small": []}
        for _ in range(repeats):
            for name, view in (("small", little), ("big", big)):
                runs[name].append(first_view(browser, view))
                errors += runs[name][-1]["console_errors"]
        x, y, w, h = rect = pan_rect(size)
        n0 = len(big.requests())
        pan_ms = browser.evaluate(
            f"(async () => {{ const t = performance.now(); lode.showImageRect({x}, {y}, {w}, {h}); "
            "await lode.idle(); return performance.now() - t; })()"
        )
        errors += browser.console_errors()
        panned = big.requests()[n0:]
        version = browser.version()
    read = chunks_read(stores["big"], "big", panned)
    in_view = {key: chunks_in_view(size, key[1], rect) for key in read}
    store_bytes = _disk_bytes(stores["big"] / "big")
    out_big, out_small = _summary(runs["big"]), _summary(runs["small"])
    return {
        "benchmark": "viewer",
        "store": {"shape_yx": list(size), "shard": BLOCK, "chunk": CHUNK, "levels": LEVELS, "bytes": store_bytes},
        "write_s": round(write_s, 1),
        "page_px": [1000, 700],
        "repeats": repeats,
        "first_image_definition": "navigation start to every visible image and label tile drawn (performance.now())",
        **out_big,
        "bytes_first_view_vs_store": out_big["store_bytes_read_first_view"] / store_bytes,
        "small": {"shape_yx": list(small), "bytes": _disk_bytes(stores["small"] / "small"), **out_small},
        "first_image_vs_small": out_big["first_image_ms"] / out_small["first_image_ms"],
        "pan": {
            "region_xywh": list(rect),
            "ms": round(pan_ms),
            "requests": len(panned),
            "store_bytes_read": _store_bytes(panned),
            "levels_read": sorted(f"{'labels' if p else 'image'}/{k}" for p, k in read),
            "chunks_read": sum(map(len, read.values())),
            "chunks_in_view_levels_read": sum(map(len, in_view.values())),
            "chunks_in_view_all_levels": 2 * sum(len(chunks_in_view(size, k, rect)) for k in range(LEVELS)),
            "chunks_outside_view": sum(len(read[key] - in_view[key]) for key in read),
            "chunks_in_store": chunks_in_store(size),
        },
        "console_errors": errors,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": [round(v, 2) for v in load_start],
            "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "platform": platform.platform(),
            "browser": version,
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="write results here")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed after)")
    ap.add_argument("--size", type=_shape, default=(8000, 12000), help="store height x width (default 8000x12000)")
    ap.add_argument("--small", type=_shape, default=(1000, 1500), help="comparison store that fits the page")
    ap.add_argument("--repeats", type=int, default=3, help="first-view navigations per store (median reported)")
    args = ap.parse_args(argv)
    from engine.io.atomic import atomic_write_json

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lode-viewer-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(work, args.size, args.small, args.repeats)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    atomic_write_json(args.json, result, indent=1)
    print(
        f"first image {result['first_image_ms']} ms ({result['first_image_vs_small']:.2f}× the small store's); "
        f"pan read {result['pan']['chunks_read']} of {result['pan']['chunks_in_store']} chunks"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
