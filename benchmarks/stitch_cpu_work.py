"""The CPU work of one ``lode stitch`` section, stage by stage: what a machine must spend, whatever its
scheduling, set beside the wall time ``benchmarks.stitch`` measures.

``python -m benchmarks.stitch_cpu_work --json OUT [--work W]`` takes the degraded section of
``benchmarks.stitch`` (default 5×5 frames of 3000×2000, lens and flat fitted from its calibration
frames; generated into ``W`` unless frames are there already, which are then used as they are),
prepares it once with ``lode stitch``'s own code under Ray (for the plan, the seam labels and the
corrected frames), then runs each stage's real functions again
in this process with one thread (OpenCV and torch) and reports the CPU seconds of each:

- ``calibration_fit``: the lens from the checkerboards and the flat field from the flat frames;
- ``correct``: every frame corrected (dark, flat, undistortion) and cached, as on the way in;
- ``register``: every overlapping pair (SIFT, matching, RANSAC) of the frames just corrected;
- ``align_and_lens``: the global solve and the lens bundle over all overlaps;
- ``correct_refined``: every frame corrected again with the refined lens;
- ``seam_refine``: every seam pair's full-resolution graph cut;
- ``render``: every shard warped, blended and written (multiband, pyramid of the shard).

``core_seconds`` is their sum and ``two_core_floor_s`` half of it: the shortest wall time two cores
could reach if nothing else ran and every stage split perfectly in two.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _cpu(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.process_time()
    out = fn()
    return out, round(time.process_time() - t, 2)


def measure(work: Path) -> dict:
    import cv2
    import ray
    import torch

    from engine.io.layout import SEAM_LABELS, array_at
    from engine.io.ome import open_store
    from engine.runtime import init_ray
    from engine.stitch.align import solve
    from engine.stitch.bundle import refine_section_lens
    from engine.stitch.collection import load_correction
    from engine.stitch.frames import FrameCorrector
    from engine.stitch.refine import PairFrame, refine_pair, seam_pairs, seam_partners
    from engine.stitch.register import register_pair
    from engine.stitch.render import RenderStage
    from engine.stitch.section import (
        StitchOptions,
        _cached,
        _nominal_pairs,
        correct_section,
        create_root,
        frame_corrector,
        plan_section,
        work_root,
    )

    collection = work / "degraded"
    store = work / "cpu_work.zarr"
    opts = StitchOptions()
    init_ray()
    corr = load_correction(collection)
    create_root(store)
    corrected = correct_section(collection / "section", store, corr, opts, frame_corrector())
    plan, report = plan_section(corrected, corr, opts)
    ray.shutdown()

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    sec, hw = corrected.sec, corrected.hw
    cpu: dict[str, float] = {}
    _, cpu["calibration_fit"] = _cpu(lambda: load_correction(collection))
    scratch = str(work / "cpu_work_frames")
    fc = FrameCorrector("cpu", 1)

    def correct(lens=None) -> None:
        for k, p in enumerate(sec.tiles):
            fc.correct(str(p), corr, hw, corrected.thumb_scale, scratch, k, lens)

    _, cpu["correct"] = _cpu(correct)
    pairs = _nominal_pairs(sec.nominal_xy, hw, opts.min_overlap)

    def register() -> list:
        edges = []
        for i, j, prior in pairs:
            cv2.setRNGSeed(i * 7919 + j)
            edges.append(register_pair(i, j, *_cached(scratch, i), *_cached(scratch, j), prior, opts.register))
        return edges

    edges, cpu["register"] = _cpu(register)

    def align() -> Any:
        al = solve(len(sec.tiles), edges, opts=opts.align)
        fit, moved = refine_section_lens(edges, al, corr.lens, opts.refine_lens)
        solve(len(sec.tiles), moved, opts=opts.align)
        return fit

    lens_fit, cpu["align_and_lens"] = _cpu(align)
    _, cpu["correct_refined"] = _cpu(lambda: correct(lens_fit.lens))
    labels = array_at(open_store(plan.store), f"{plan.group}/{SEAM_LABELS}")[:]

    def seams() -> int:
        partners = seam_partners(labels)
        todo = seam_pairs(labels, partners)
        for pair in todo:
            fa, fb = (PairFrame(k, *_cached(plan.work, k), plan.mats[k], plan.gains[k]) for k in pair)
            refine_pair(labels, partners, plan.scale, fa, fb, plan.shape)
        return len(todo)

    seam_pairs_n, cpu["seam_refine"] = _cpu(seams)
    stage = RenderStage({plan.section: plan})
    stage.setup("cpu")

    def render() -> None:
        for u in plan.units:
            stage.write(u, stage.compute(u, stage.read(u)))

    _, cpu["render"] = _cpu(render)
    for scratch_path in (scratch, store, work_root(store)):
        shutil.rmtree(scratch_path, ignore_errors=True)
    total = round(sum(cpu.values()), 1)
    return {
        "what": "CPU seconds of each stitch stage of the degraded section, one thread, in one process",
        "frames": len(sec.tiles),
        "frame_hw": list(hw),
        "cpus": os.cpu_count(),
        "pairs": len(pairs),
        "seam_pairs": seam_pairs_n,
        "shards": len(plan.units),
        "lens_refined": bool(lens_fit.refined),
        "cpu_s": cpu,
        "core_seconds": total,
        "two_core_floor_s": round(total / 2, 1),
        "stitch_timings_s_under_ray": report["timings_s"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="write results here")
    ap.add_argument(
        "--work", default=None, help="folder with (or for) benchmarks.stitch's frames (default: a temporary one)"
    )
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--cols", type=int, default=5)
    ap.add_argument("--frame", default="3000x2000", help="frame width×height")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lode-cpu-work-") as tmp:
        work = Path(args.work or tmp)
        if not (work / "degraded" / "section" / "truth.json").exists():
            from benchmarks.stitch import generate

            w, h = (int(v) for v in args.frame.lower().split("x"))
            work.mkdir(parents=True, exist_ok=True)
            generate(work, args.rows, args.cols, (h, w), 7)
        results = measure(work)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
