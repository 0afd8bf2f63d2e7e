"""End-to-end demo on an embedded local Ray: synthesise, train, segment, score."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from jobs.common import setup_logging
from jobs.contract import Job


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--steps", type=int, default=400, help="training steps")
    p.add_argument("--size", type=int, nargs=2, default=(1536, 2048), metavar=("H", "W"), help="panorama size")
    p.add_argument("--seed", type=int, default=0)


def _preview(store, section: str, out: Path) -> Path:
    """Side-by-side PNG of the image and its labels at the coarsest pyramid level."""
    import cv2
    import numpy as np

    from engine.classes import LUMENSTONE
    from engine.io.layout import LABELS_GROUP, MINERALS

    img = store[section]
    lvl = str(len([k for k in img.array_keys()]) - 1)
    rgb = np.moveaxis(np.asarray(img[lvl][:]), 0, -1)
    lab = LUMENSTONE.palette()[np.asarray(img[f"{LABELS_GROUP}/{MINERALS}/{lvl}"][:])]
    path = out / f"{section}_preview.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([rgb, lab], axis=1), cv2.COLOR_RGB2BGR))
    return path


def run(cfg: Any) -> int:
    setup_logging()

    import numpy as np
    import zarr

    from engine.analyze.evaluate import evaluate_store
    from engine.classes import LUMENSTONE
    from engine.io.layout import STORE_NAME
    from engine.runtime import init_ray
    from engine.segment.pipeline import SegmentOptions, run_segmentation
    from engine.synth import ASSOCIATIONS, SectionSpec, write_lumenstone, write_panorama
    from engine.train.loop import TrainOptions, train

    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings = {}
    init_ray()
    print("[1/4] synthesising a training collection and two panoramas ...", flush=True)
    data = write_lumenstone(
        out / "collection", n_train=8, n_test=2, size=(512, 768), associations=("S1", "S2"), seed=cfg.seed
    )
    panos = out / "panoramas.zarr"
    for i, assoc in enumerate(("S1", "S2")):
        write_panorama(
            panos,
            f"section-{assoc}",
            cfg.size[0],
            cfg.size[1],
            SectionSpec(seed=1000 + cfg.seed * 10 + i, association=assoc),
        )
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

    print("[3/4] segmenting the panoramas (Ray Data, blocked sliding window) ...", flush=True)
    t = time.perf_counter()
    seg_out = out / "segmentation"
    run_segmentation(SegmentOptions(inputs=[str(panos)], out=str(seg_out), checkpoint=str(ckpt), probabilities="uint8"))
    timings["segment_s"] = time.perf_counter() - t

    print("[4/4] scoring against the synthetic truth ...", flush=True)
    pred_store = zarr.open_group(str(seg_out / STORE_NAME), mode="r")
    codes = sorted({c for s in ("S1", "S2") for c in ASSOCIATIONS[s].shares})
    scores, per_section = evaluate_store(seg_out / STORE_NAME, panos, codes)
    previews = [str(_preview(pred_store, name, out)) for name in sorted(per_section)]
    names = {c.code: c.name for c in LUMENSTONE.classes}
    print(scores.table(names))
    timings["total_s"] = time.perf_counter() - t0
    summary = {
        "mean_iou": scores.mean_iou,
        "pixel_accuracy": scores.pixel_accuracy,
        "iou": {names[c]: (None if np.isnan(v) else float(v)) for c, v in zip(codes, scores.iou)},
        "timings": timings,
        "checkpoint": str(ckpt),
        "store": str(seg_out / STORE_NAME),
        "manifest": str(seg_out / "manifest.json"),
        "previews": previews,
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    print("\nOutputs:")
    print(f"  OME-Zarr store (image, labels/minerals, probabilities): {seg_out / STORE_NAME}")
    print(f"  run manifest with per-block status:                    {seg_out / 'manifest.json'}")
    print(f"  trained model checkpoint (state dict + model card):    {ckpt}")
    print(f"  previews (image | labels):                             {', '.join(previews)}")
    print(f"  summary:                                               {out / 'demo_summary.json'}")
    print(f"Demo finished in {timings['total_s']:.0f} s.")
    print(f"Browse it: lode view {seg_out}")
    return 0


JOB = Job("demo", add_arguments, run, description=__doc__)

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
