"""End-to-end demo on an embedded local Ray: raw synthetic captures through ``lode run``, scored against truth.

It synthesises a training collection and a capture collection of two sections (overlapping frames
through a distorting, vignetting camera with exposure drift, noise and JPEG, plus the collection's
checkerboard, flat and dark frames), trains a model with Ray Train, runs ``lode run`` (capture
calibration, stitching, segmentation, grains and reports), then scores each section against its
exact truth: stitch RMS, IoU, composition and grain count.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs.contract import Job

PIXEL_SIZE_UM = 0.5
ASSOCIATIONS = ("S1", "S2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--steps", type=int, default=400, help="training steps")
    p.add_argument("--grid", type=int, nargs=2, default=(3, 3), metavar=("ROWS", "COLS"), help="frames per section")
    p.add_argument("--frame", type=int, nargs=2, default=(640, 860), metavar=("H", "W"), help="frame size")
    p.add_argument("--seed", type=int, default=0)


def _captures(cfg: Any, root: Path) -> dict[str, dict]:
    """Write ``root/<section>/tiles`` and ``root/calibration``; each section's truth (source labels, transforms)."""
    from engine.synth import SectionSpec
    from engine.synth.captures import CaptureConfig, calibration_frames, capture_grid, write_calibration, write_section
    from engine.synth.section import render_section

    truth = {}
    for i, assoc in enumerate(ASSOCIATIONS):
        cap = CaptureConfig.degraded(
            frame_hw=tuple(cfg.frame), rows=cfg.grid[0], cols=cfg.grid[1], seed=1000 + cfg.seed * 10 + i
        )
        rgb, labels = render_section(SectionSpec(seed=1000 + cfg.seed * 10 + i, association=assoc), *cap.source_hw)
        caps = capture_grid(rgb, cap)
        name = f"section-{assoc}"
        write_section(root, name, caps)
        truth[name] = {"labels": labels, **caps.truth_dict()}
    write_calibration(root, calibration_frames(cap))
    (root / "calibration" / "pixel_size.json").write_text(json.dumps({"pixel_size_um": PIXEL_SIZE_UM}))
    return truth


def _score_stitch(store: Any, name: str, truth: dict, out: Path) -> float:
    """Stitch RMS (px) against the truth; writes the truth labels on the panorama's grid to ``out/<name>.png``
    (void where no frame covers the panorama)."""
    import cv2

    from engine.calibrate.lens import LensModel
    from engine.io.images import write_image
    from engine.io.ome import VOID
    from engine.stitch.evaluate import alignment_rms

    rep = store[name].attrs["lode"]["stitch"]
    hw = tuple(truth["frame_hw"])
    lens = LensModel.from_dict({**rep["correction"]["lens"], "frame_hw": hw}) if rep["correction"]["lens"] else None
    t = truth["lens"]
    true_lens = LensModel.from_dict(
        {
            "camera_matrix": [[t["fx"], 0, t["cx"]], [0, t["fy"], t["cy"]], [0, 0, 1]],
            "dist_coeffs": t["dist"],
            "frame_hw": hw,
        }
    )
    names = [f["file"].rsplit(".", 1)[0] for f in rep["frames"]]
    est = [np.array(f["transform"]) if f["placed"] else None for f in rep["frames"]]
    tt = [None if truth["transforms"][n] is None else np.array(truth["transforms"][n]) for n in names]
    rms, G = alignment_rms(est, lens, tt, true_lens, hw)
    image = np.asarray(store[f"{name}/0"][:])
    h, w = image.shape[1:]
    labels = cv2.warpAffine(
        truth["labels"], G, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=VOID
    )
    labels[~image.any(axis=0)] = VOID
    write_image(out / f"{name}.png", labels)
    return rms


def run(cfg: Any) -> int:
    from jobs.common import setup_logging

    setup_logging(fmt="%(message)s")
    import logging

    import zarr

    from engine.analyze.evaluate import evaluate_store
    from engine.classes import LUMENSTONE
    from engine.io.layout import STORE_NAME
    from engine.runtime import init_ray
    from engine.synth import ASSOCIATIONS as SHARES
    from engine.synth import write_lumenstone
    from engine.train.loop import TrainOptions, train
    from jobs import run as run_job

    logging.getLogger("engine").setLevel(logging.WARNING)
    logging.getLogger("lode").setLevel(logging.WARNING)
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings = {}
    init_ray()
    rows, cols = cfg.grid
    print(
        f"[1/4] synthesising a training collection and {len(ASSOCIATIONS)} sections of {rows}×{cols} raw "
        "captures (lens distortion, vignetting, exposure drift, noise, JPEG) ...",
        flush=True,
    )
    data = write_lumenstone(
        out / "collection", n_train=8, n_test=2, size=(512, 768), associations=ASSOCIATIONS, seed=cfg.seed
    )
    truth = _captures(cfg, out / "captures")
    timings["synth_s"] = time.perf_counter() - t0

    print(f"[2/4] training PSPNet-ResNet18 for {cfg.steps} steps with Ray Train ...", flush=True)
    t = time.perf_counter()
    ckpt = train(
        TrainOptions(
            data=str(data),
            out=str(out / "model"),
            arch="pspnet",
            encoder="resnet18",
            steps=cfg.steps,
            patch=256,
            batch_size=8,
            seed=cfg.seed,
            window=512,
        )
    )
    timings["train_s"] = time.perf_counter() - t

    print("[3/4] lode run: capture calibration, stitching, segmentation, grains and reports", flush=True)
    t = time.perf_counter()
    run_out = out / "run"
    argv = [str(out / "captures"), "--model", str(ckpt), "--out", str(run_out), "--num-cpus", "2"]
    run_job.run(run_job.JOB.validate(run_job.JOB.parser().parse_args(argv)))
    timings["run_s"] = time.perf_counter() - t

    print("[4/4] scoring against the synthetic truth ...", flush=True)
    store = zarr.open_group(str(run_out / STORE_NAME), mode="r")
    truth_dir = out / "truth"
    truth_dir.mkdir(exist_ok=True)
    rms = {name: _score_stitch(store, name, truth[name], truth_dir) for name in truth}
    codes = sorted({c for s in ASSOCIATIONS for c in SHARES[s].shares})
    scores, per_section = evaluate_store(run_out / STORE_NAME, truth_dir, codes)
    names = {c.code: c.name for c in LUMENSTONE.classes}
    units = json.loads((run_out / "manifest.json").read_text())["units"]
    print(scores.table(names))
    for name in truth:
        an = units[name]["analyze"]
        modes = ", ".join(f"{k} {v} %" for k, v in an["composition"].items())
        print(
            f"{name}: stitch RMS {rms[name]:.3f} px against the truth, mean IoU {per_section[name].mean_iou:.3f}, "
            f"{an['grains']} grains; {modes}"
        )
    timings["total_s"] = time.perf_counter() - t0
    summary = {
        "mean_iou": scores.mean_iou,
        "pixel_accuracy": scores.pixel_accuracy,
        "iou": {names[c]: (None if np.isnan(v) else float(v)) for c, v in zip(codes, scores.iou)},
        "sections": {
            name: {
                "stitch_rms_px": rms[name],
                "mean_iou": per_section[name].mean_iou,
                "grains": units[name]["analyze"]["grains"],
                "composition_percent": units[name]["analyze"]["composition"],
            }
            for name in truth
        },
        "timings": timings,
        "checkpoint": str(ckpt),
        "run": str(run_out),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nOutputs in {run_out}: lode.ome.zarr (panoramas in µm, labels), report.html, grains.parquet,")
    print(f"statistics.parquet, manifest.json; summary {out / 'demo_summary.json'}.")
    print(f"Demo finished in {timings['total_s']:.0f} s. Browse it: lode view {run_out}")
    return 0


JOB = Job("demo", add_arguments, run, description=__doc__)

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
