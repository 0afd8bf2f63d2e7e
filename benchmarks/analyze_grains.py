"""Grain table + statistics on a large multi-class label image (default 12000×8000, 15 classes).

``python -m benchmarks.analyze_grains --json OUT`` writes a synthetic label store, runs
``analyze_store`` serially and with Ray tasks in one process, and reports wall time,
CPU seconds (this process and its descendants: on a shared machine wall time mostly
measures the contention, cpu_s / cores bounds the uncontended time), peak resident
memory (this process plus its children) and grains per second.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil


def synthetic_labels(shape: tuple[int, int], n_classes: int, seed: int) -> np.ndarray:
    """Mosaic of grains: smoothed random class field at several scales plus scattered small discs."""
    import cv2

    rng = np.random.default_rng(seed)
    H, W = shape
    small = rng.integers(0, n_classes, (H // 40, W // 40)).astype(np.uint8)
    lab = cv2.resize(small, (W, H), interpolation=cv2.INTER_NEAREST)
    noise = cv2.resize(rng.random((H // 6, W // 6)).astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    lab[noise < 0.35] = 0
    lab = cv2.medianBlur(lab, 5)
    for _ in range(30000):
        y, x = int(rng.integers(0, H)), int(rng.integers(0, W))
        cv2.circle(lab, (x, y), int(rng.integers(1, 8)), int(rng.integers(1, n_classes)), -1)
    return lab


def write_label_store(path: Path, lab: np.ndarray, block: int = 2048) -> None:
    from engine.classes import LUMENSTONE
    from engine.io.integrity import mark_complete
    from engine.io.layout import MINERALS
    from engine.io.ome import PyramidLayout, create_image, create_labels, open_store, write_block

    root = open_store(path, mode="w")
    layout = PyramidLayout((block, block), chunk=512, levels=3)
    H, W = lab.shape
    img = create_image(root, "big", (1, H, W), layout, pixel_size_um=0.7)
    lbl = create_labels(img, MINERALS, LUMENSTONE, layout, pixel_size_um=0.7)
    for y0 in range(0, H, block):
        for x0 in range(0, W, block):
            write_block(lbl, lab[y0 : y0 + block, x0 : x0 + block], y0, x0, "label")
    mark_complete(lbl)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its live descendants (Ray workers included)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for c in me.children(recursive=True):
        try:
            total += sum(c.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


class PeakRSS:
    """Samples RSS of this process and its children every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = me.memory_info().rss
            for c in me.children(recursive=True):
                try:
                    total += c.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--height", type=int, default=12000)
    ap.add_argument("--width", type=int, default=8000)
    ap.add_argument("--classes", type=int, default=15)
    ap.add_argument("--executors", default="serial,ray")
    args = ap.parse_args()
    from engine.analyze.collection import analyze_store

    out: dict = {
        "shape": [args.height, args.width],
        "classes": args.classes,
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "big.zarr"
        t0 = time.perf_counter()
        lab = synthetic_labels((args.height, args.width), args.classes, seed=0)
        write_label_store(store, lab)
        del lab
        out["setup_s"] = time.perf_counter() - t0
        for ex in args.executors.split(","):
            if ex == "ray":
                import ray

                from engine.runtime import init_ray

                t0 = time.perf_counter()
                init_ray(num_cpus=os.cpu_count())
                out["ray_init_s"] = time.perf_counter() - t0
            with PeakRSS() as mem:
                c0 = cpu_seconds()
                t0 = time.perf_counter()
                res = analyze_store(store, Path(tmp) / ex, executor=ex, report=False)
                wall = time.perf_counter() - t0
                cpu = cpu_seconds() - c0
            import pyarrow.parquet as pq

            n = pq.read_metadata(res.grains_path).num_rows
            out[ex] = {
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss_gib": mem.peak / 2**30,
                "grains": n,
                "grains_per_s": n / wall,
                "timings": res.timings,
            }
            if ex == "ray":
                ray.shutdown()
    if "serial" in out and "ray" in out:
        out["ray_speedup"] = out["serial"]["wall_s"] / out["ray"]["wall_s"]
    out["loadavg_after"] = os.getloadavg()
    args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
