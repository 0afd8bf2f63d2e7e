"""``lode run`` on collections of 2 and 8 sections from raw captures, beside the individual jobs.

Each section is 3×3 degraded frames (barrel lens, vignetting, drift, noise, JPEG) making a panorama of
about ``--size`` (default 6000×4000), with the collection's checkerboard, flat and dark frames and its
pixel size; the model is PSPNet-ResNet18 with random weights (speed and memory do not depend on them).
Every job runs as ``python -m jobs.<name>`` in its own process with its own Ray session; in one run:

- ``lode run`` on 2 and on 8 sections: wall time and the peak of the RSS summed over the job's process
  tree and every process of its Ray session (acceptance: RSS at 8 ≤ 1.25 × RSS at 2);
- the same 8 sections through ``lode stitch``, ``lode segment`` and ``lode analyze`` run one after
  another: their summed wall time. Throughput (sections per hour) of both; the pipelined run must be faster.

The 8-section runs are interleaved A B B A (``lode run``, the jobs, the jobs, ``lode run``; ``--repeats``
pairs), so that a drift of the shared machine weighs on both alike; the figures are the sums over the
repeats, beside each run's own wall time and the machine's busy and stolen CPU seconds during it.

``python -m benchmarks.collection --json OUT [--size W H] [--counts 2 8] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.stitch_collection import run_measured

TARGET_RATIO = 1.25
GRID = 3
OVERLAP = 0.25


def frame_hw(width: int, height: int) -> tuple[int, int]:
    """Frames of a ``GRID``×``GRID`` capture at ``OVERLAP`` whose mosaic is ``height``×``width``."""
    span = (GRID - 1) * (1 - OVERLAP) + 1
    return int(round(height / span)), int(round(width / span))


def write_collection(root: Path, sections: int, hw: tuple[int, int]) -> Path:
    """``sections`` synthetic sections (fixed seeds) with the collection's calibration frames and pixel size."""
    from engine.synth import SectionSpec
    from engine.synth.captures import CaptureConfig, calibration_frames, capture_grid, write_calibration, write_section
    from engine.synth.section import render_section

    cfg = CaptureConfig.degraded(frame_hw=hw, rows=GRID, cols=GRID, seed=200)
    for s in range(sections):
        cfg = CaptureConfig.degraded(frame_hw=hw, rows=GRID, cols=GRID, seed=200 + s)
        rgb, _ = render_section(SectionSpec(seed=300 + s, association=("S1", "S2")[s % 2]), *cfg.source_hw)
        write_section(root, f"s{s:02d}", capture_grid(rgb, cfg))
    write_calibration(root, calibration_frames(cfg))
    (root / "calibration" / "pixel_size.json").write_text(json.dumps({"pixel_size_um": 0.5}))
    return root


def write_model(path: Path) -> Path:
    import torch

    from engine.classes import LUMENSTONE
    from engine.nets import build
    from engine.segment.checkpoint import ModelCard, save_checkpoint

    torch.manual_seed(0)
    model = build("pspnet", encoder="resnet18", in_channels=3, classes=len(LUMENSTONE))
    card = ModelCard(arch="pspnet", encoder="resnet18", classes=LUMENSTONE.to_dicts(), window=512, overlap=0.25)
    save_checkpoint(path, model, card)
    return path


def _run(coll: Path, model: Path, out: Path) -> dict:
    run = run_measured(["jobs.run", str(coll), "--model", str(model), "--out", str(out)])
    run.pop("stdout")
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest["status"] != "complete":
        raise RuntimeError(f"lode run ended {manifest['status']}: {manifest.get('error')}")
    return {**run, "sections": len(manifest["units"]), "timings_s": manifest["timings"]}


def _chain(coll: Path, model: Path, out: Path) -> dict:
    out.mkdir(parents=True)
    jobs = {
        "stitch": ["jobs.stitch", str(coll), "--out", str(out / "panoramas.zarr")],
        "segment": ["jobs.segment", str(out / "panoramas.zarr"), "--model", str(model), "--out", str(out)],
        "analyze": ["jobs.analyze", str(out / "lode.ome.zarr"), "--out", str(out)],
    }
    steps = {}
    for name, argv in jobs.items():
        steps[name] = run_measured(argv)
        steps[name].pop("stdout")
        print(f"  {name}: {steps[name]}", flush=True)
    return {
        "seconds": round(sum(s["seconds"] for s in steps.values()), 2),
        "cpu_s": round(sum(s["cpu_s"] for s in steps.values()), 1),
        "steal_s": round(sum(s["steal_s"] for s in steps.values()), 1),
        "peak_rss_gib": max(s["peak_rss_gib"] for s in steps.values()),
        "jobs": steps,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--counts", type=int, nargs=2, default=[2, 8], metavar=("FEW", "MANY"))
    ap.add_argument("--size", type=int, nargs=2, default=[6000, 4000], metavar=("W", "H"), help="panorama size")
    ap.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs of each way on the larger collection, interleaved A B B A (default 2)",
    )
    ap.add_argument("--work", type=Path, help="keep inputs and outputs here (default: a temporary folder)")
    args = ap.parse_args(argv)
    few, many = args.counts
    hw = frame_hw(*args.size)
    order = ["run", "chain", "chain", "run"] * (args.repeats // 2) + ["run", "chain"] * (args.repeats % 2)
    with tempfile.TemporaryDirectory(prefix="lode-bench-collection-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = write_model(work / "model.pt")
        colls = {n: write_collection(work / f"c{n}", n, hw) for n in (few, many)}
        print(f"{few} and {many} sections of {GRID}×{GRID} frames of {hw[1]}×{hw[0]} written", flush=True)
        few_run = _run(colls[few], model, work / f"run{few}")
        print(f"lode run, {few} sections: {few_run}", flush=True)
        runs: dict[str, list[dict]] = {"run": [], "chain": []}
        for i, mode in enumerate(order):
            out = work / f"{mode}{many}_{i}"
            res = _run(colls[many], model, out) if mode == "run" else _chain(colls[many], model, out)
            shutil.rmtree(out, ignore_errors=True)
            runs[mode].append(res)
            print(f"{'lode run' if mode == 'run' else 'the jobs'}, {many} sections: {res['seconds']} s", flush=True)
    total = {mode: sum(r["seconds"] for r in rs) for mode, rs in runs.items()}
    ratio = max(r["peak_rss_gib"] for r in runs["run"]) / few_run["peak_rss_gib"]
    pipelined = 3600 * many * len(runs["run"]) / total["run"]
    sequential = 3600 * many * len(runs["chain"]) / total["chain"]
    result = {
        "benchmark": "collection",
        "sections": {"grid": f"{GRID}x{GRID}", "frame_hw": list(hw), "panorama_about_wh": args.size},
        "model": "pspnet-resnet18, random weights, window 512",
        "cpus": os.cpu_count(),
        "few": few,
        "many": many,
        "order": order,
        "lode_run": {str(few): few_run, str(many): runs["run"]},
        "individual_jobs": {str(many): runs["chain"]},
        "rss_ratio": round(ratio, 4),
        "sections_per_hour": {"lode_run": round(pipelined, 2), "individual_jobs": round(sequential, 2)},
        "speedup": round(pipelined / sequential, 4),
        "speedup_per_pair": [
            round(c["seconds"] / r["seconds"], 4) for r, c in zip(runs["run"], runs["chain"], strict=True)
        ],
        "cpu_s_ratio": round(sum(r["cpu_s"] for r in runs["run"]) / sum(c["cpu_s"] for c in runs["chain"]), 4),
        "acceptance": {
            "rss_ratio_max": TARGET_RATIO,
            "rss_met": ratio <= TARGET_RATIO,
            "pipelined_faster": pipelined > sequential,
        },
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
