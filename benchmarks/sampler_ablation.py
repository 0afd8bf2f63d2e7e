"""Ablation: the same model, steps and seed trained on balanced vs uniform patches.

``python -m benchmarks.sampler_ablation --json OUT`` writes a small S1+S2-like collection with
the Table-1 imbalance (``T1-S1``/``T1-S2``), trains twice with ``lode train`` settings that differ
only in ``sampler`` (balanced / uniform), scores both on the held-out split with the
sliding-window predictor (intersections and unions summed over the split) and reports the full
per-class IoU table, the rarest training class and its IoU gain.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sampler_ablation", description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--train", type=int, default=8)
    ap.add_argument("--test", type=int, default=4)
    ap.add_argument("--size", type=int, nargs=2, default=(384, 512))
    ap.add_argument("--arch", default="unet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="folder for the collection and models (default: temporary)")
    args = ap.parse_args()

    from engine.classes import LUMENSTONE_CATALOGUE
    from engine.runtime import init_ray
    from engine.segment.checkpoint import load_checkpoint
    from engine.synth import write_lumenstone
    from engine.train.data import load_split
    from engine.train.loop import TrainOptions, validate

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="lode-ablation-")
    work = Path(args.work or tmp.name)
    data = work / "collection"
    if not (data / "synth.json").is_file():
        write_lumenstone(
            data,
            n_train=args.train,
            n_test=args.test,
            size=tuple(args.size),
            associations=("T1-S1", "T1-S2"),
            seed=args.seed,
            grain_diameter=40.0,
        )
    train_masks = [s.mask for s in load_split(data, "train")]
    population = np.sum([np.bincount(m.ravel(), minlength=256) for m in train_masks], axis=0)
    codes = [int(c) for c in np.flatnonzero(population)]
    rarest = min(codes, key=lambda c: population[c])
    test = load_split(data, "test")
    init_ray()
    res: dict = {
        "collection": {
            "train": args.train,
            "test": args.test,
            "size": list(args.size),
            "train_shares": {str(c): float(population[c] / population.sum()) for c in codes},
        },
        "settings": {
            "arch": args.arch,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "patch": args.patch,
            "seed": args.seed,
        },
        "rarest_class": rarest,
        "rarest_name": LUMENSTONE_CATALOGUE[rarest].name,
    }
    from engine.train.loop import train

    for sampler in ("balanced", "uniform"):
        t = time.perf_counter()
        ckpt = train(
            TrainOptions(
                data=str(data),
                out=str(work / sampler),
                arch=args.arch,
                steps=args.steps,
                epochs=1,
                patch=args.patch,
                batch_size=args.batch_size,
                sampler=sampler,
                seed=args.seed,
                window=256,
                streams=2,
            )
        )
        model, card = load_checkpoint(ckpt)
        scores = validate(model, card, test)
        hist = json.loads((work / sampler / "train_metrics.json").read_text())["history"][-1]
        res[sampler] = {
            "mean_iou": scores.mean_iou,
            "pixel_accuracy": scores.pixel_accuracy,
            "iou": {str(c): (None if np.isnan(v) else float(v)) for c, v in zip(card.class_set().codes, scores.iou)},
            "sampled_share": hist["sampled_share"],
            "seconds": time.perf_counter() - t,
        }
    b, u = res["balanced"]["iou"][str(rarest)], res["uniform"]["iou"][str(rarest)]
    res["rarest_iou_gain"] = (b or 0.0) - (u or 0.0)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1))
    names = {c: LUMENSTONE_CATALOGUE[c].name for c in codes}
    print(f"{'class':<14}{'train %':>9}{'balanced':>10}{'uniform':>9}")
    for c in codes:
        bi, ui = res["balanced"]["iou"].get(str(c)), res["uniform"]["iou"].get(str(c))
        print(
            f"{names[c]:<14}{100 * population[c] / population.sum():>9.2f}"
            f"{bi if bi is not None else float('nan'):>10.3f}{ui if ui is not None else float('nan'):>9.3f}"
        )
    print(f"rarest class {names[rarest]}: IoU gain {res['rarest_iou_gain']:+.3f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
