"""Colour calibration: CIEDE2000 test data, held-out ΔE after correction, series mode, speed, model accuracy.

``python -m benchmarks.colour --json OUT`` measures, in one run:

- the Sharma, Wu & Dalal (2005) 34 pairs: max |ΔE00 − published| (ours and scikit-image);
- random casts (affine in linear RGB, gamma, blue/yellow filters) of synthetic sections with every
  LumenStone class: held-out classes' mean ΔE00 after per-image correction fitted on a 35 % strip
  annotation (ΔE00 fit vs plain least-squares fits in linear and in encoded RGB);
- series mode: one matrix for 10 captures of one cast vs a matrix per capture (both also with the
  plain objective, without the crosstalk prior); the same casts with the held-out classes shared by
  all ten captures (unseen by the series matrix too); and uncast captures, where any held-out error
  is annotation noise the fit has absorbed;
- wall and CPU time to correct a 3396×2547 capture;
- a model trained on reference colours (Ray Train): pixel accuracy on the uncast test captures, on
  cast captures, and on cast captures after per-image correction (annotation ≤ 35 %).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def sharma() -> dict:
    from skimage.color import deltaE_ciede2000

    from engine.calibrate.colour import ciede2000
    from tests.calibrate.test_ciede2000 import SHARMA_2005

    ours = np.abs(ciede2000(SHARMA_2005[:, :3], SHARMA_2005[:, 3:6]) - SHARMA_2005[:, 6])
    sk = np.abs(deltaE_ciede2000(SHARMA_2005[:, :3], SHARMA_2005[:, 3:6]) - SHARMA_2005[:, 6])
    return {"pairs": len(SHARMA_2005), "max_abs_error": float(ours.max()), "skimage_max_abs_error": float(sk.max())}


def held_out(n_trials: int, size: tuple[int, int], seed: int) -> dict:
    from engine.calibrate.colour import CROSSTALK_PRIOR, fit_image
    from engine.synth.casts import ColourCast, partial_annotation
    from engine.synth.colour_eval import per_image_trials, reference_means, render_set, series_trial

    train = render_set(4, size, seed=seed, grain_diameter=30)
    tests = render_set(10, size, seed=seed + 1000, grain_diameter=30)
    ref = reference_means(train)
    trials = per_image_trials(tests, ref, n_trials, seed=seed)
    t0 = time.perf_counter()
    for (rgb, lab), t in zip(tests, trials):
        fit_image(t.cast.apply(rgb), partial_annotation(lab, 0.35, t.held_out), ref)
    fit_s = (time.perf_counter() - t0) / len(tests)
    series = [series_trial(tests, ref, seed=seed + 10 + k) for k in range(5)]
    gaps = [s["series"] - s["per_image"] for s in series]
    shared = [series_trial(tests, ref, seed=seed + 10 + k, shared_held_out=True) for k in range(5)]
    shared_gaps = [s["series"] - s["per_image"] for s in shared]
    uncast = series_trial(tests, ref, seed=seed + 10, cast=ColourCast(((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0))))
    return {
        "size": list(size),
        "trials": n_trials,
        "held_out_per_trial": 2,
        "crosstalk_prior": CROSSTALK_PRIOR,
        "annotated_fraction_max": max(t.annotated_fraction for t in trials),
        "mean_delta_e_before": float(np.mean([t.before for t in trials])),
        "mean_delta_e_after_ciede2000_fit": float(np.mean([t.delta_e_fit for t in trials])),
        "mean_delta_e_after_ciede2000_fit_plain": float(np.mean([t.delta_e_fit_plain for t in trials])),
        "mean_delta_e_after_lstsq_linear_rgb": float(np.mean([t.lstsq_fit for t in trials])),
        "mean_delta_e_after_lstsq_encoded_rgb": float(np.mean([t.lstsq_encoded_fit for t in trials])),
        "median_delta_e_after_ciede2000_fit": float(np.median([t.delta_e_fit for t in trials])),
        "trials_ciede2000_below_lstsq_linear": int(sum(t.delta_e_fit < t.lstsq_fit for t in trials)),
        "fit_seconds_per_capture": fit_s,
        "series": series,
        "series_minus_per_image_mean": float(np.mean(gaps)),
        "series_minus_per_image_max_abs": float(max(map(abs, gaps))),
        "series_shared_held_out": shared,
        "shared_held_out_series_minus_per_image_mean": float(np.mean(shared_gaps)),
        "shared_held_out_series_minus_per_image_max_abs": float(max(map(abs, shared_gaps))),
        "uncast_captures": uncast,
    }


def choose_prior(
    size: tuple[int, int], seed: int, priors: tuple[float, ...] = (0, 100, 200, 300, 500, 1000, 3000), casts: int = 10
) -> dict:
    """Validation grid for ``CROSSTALK_PRIOR``: held-out ΔE00 of per-image fits on sections and casts
    that :func:`held_out` does not use (sections seeded ``seed + 2000``, casts ``seed + 100`` on)."""
    from engine.synth.colour_eval import reference_means, render_set, series_trial

    ref = reference_means(render_set(4, size, seed=seed, grain_diameter=30))
    val = render_set(10, size, seed=seed + 2000, grain_diameter=30)
    runs = [
        series_trial(val, ref, seed=seed + 100 + k, priors={str(p): p for p in priors}, with_series=False)
        for k in range(casts)
    ]
    return {
        "size": list(size),
        "sections": len(val),
        "casts": casts,
        "mean_held_out_delta_e_per_image": {str(p): float(np.mean([r[f"per_image{p}"] for r in runs])) for p in priors},
    }


def speed(repeats: int = 5) -> dict:
    from engine.calibrate.colour import ColourMatrix

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2547, 3396, 3), dtype=np.uint8)
    m = ColourMatrix(np.array([[1.1, 0.05, 0], [0.02, 0.9, 0.01], [0, 0.03, 1.2], [0.01, 0.0, 0.02]]))
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        m.apply(img)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {
        "shape": [2547, 3396, 3],
        "repeats": repeats,
        "wall_s_median": float(np.median(walls)),
        "wall_s_min": float(min(walls)),
        "cpu_s_median": float(np.median(cpus)),
        "cores": os.cpu_count(),
    }


def model_accuracy(work: Path, steps: int, seed: int) -> dict:
    import cv2

    from benchmarks._segment_eval import scores
    from engine.calibrate.colour import fit_image, reference_from_card
    from engine.segment.checkpoint import read_card
    from engine.synth import write_lumenstone
    from engine.synth.casts import partial_annotation, random_cast
    from engine.train.loop import TrainOptions, train

    data = write_lumenstone(work / "ds", n_train=8, n_test=4, size=(384, 512), associations=("S1", "S2"), seed=seed)
    t0 = time.perf_counter()
    ckpt = train(
        TrainOptions(
            data=str(data),
            out=str(work / "model"),
            arch="pspnet",
            steps=steps,
            patch=192,
            batch_size=8,
            window=256,
            seed=seed,
        )
    )
    train_s = time.perf_counter() - t0
    ref = reference_from_card(read_card(ckpt).reference_colors)
    rng = np.random.default_rng(seed + 5)
    clean, cast_pairs, fixed_pairs, plain_pairs, fractions = [], [], [], [], []
    for p in sorted((data / "imgs" / "test").glob("*.png")):
        rgb = cv2.imread(str(p))[..., ::-1].copy()
        lab = cv2.imread(str(data / "masks" / "test" / p.name), cv2.IMREAD_UNCHANGED)
        clean.append((rgb, lab))
        for _ in range(3):
            cap = random_cast(rng).apply(rgb)
            ann = partial_annotation(lab, 0.35)
            fractions.append(float((ann != 255).mean()))
            cast_pairs.append((cap, lab))
            fixed_pairs.append((fit_image(cap, ann, ref).apply(cap), lab))
            plain_pairs.append((fit_image(cap, ann, ref, crosstalk_prior=0.0).apply(cap), lab))
    s0, s1, s2 = scores(ckpt, clean), scores(ckpt, cast_pairs), scores(ckpt, fixed_pairs)
    s3 = scores(ckpt, plain_pairs)
    return {
        "train_steps": steps,
        "train_s": train_s,
        "test_images": len(clean),
        "casts_per_image": 3,
        "annotation_fraction_max": max(fractions),
        "pixel_accuracy_uncast": s0.pixel_accuracy,
        "pixel_accuracy_cast_uncorrected": s1.pixel_accuracy,
        "pixel_accuracy_cast_corrected": s2.pixel_accuracy,
        "ratio_corrected_to_uncast": s2.pixel_accuracy / s0.pixel_accuracy,
        "pixel_accuracy_cast_corrected_plain": s3.pixel_accuracy,
        "ratio_corrected_plain_to_uncast": s3.pixel_accuracy / s0.pixel_accuracy,
        "mean_iou_uncast": s0.mean_iou,
        "mean_iou_cast_uncorrected": s1.mean_iou,
        "mean_iou_cast_corrected": s2.mean_iou,
        "mean_iou_cast_corrected_plain": s3.mean_iou,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True, help="output JSON")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--size", type=int, nargs=2, default=(768, 1024))
    p.add_argument("--steps", type=int, default=400, help="training steps of the model-based check")
    p.add_argument("--skip-model", action="store_true")
    p.add_argument(
        "--choose-prior",
        action="store_true",
        help="only the validation grid for the crosstalk prior (no evaluation casts)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if args.choose_prior:
        out = {"choose_prior": choose_prior(tuple(args.size), args.seed)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(json.dumps(out, indent=1))
        return
    out: dict = {"sharma": sharma(), "speed": speed(), "held_out": held_out(args.trials, tuple(args.size), args.seed)}
    print(json.dumps(out, indent=1))
    if not args.skip_model:
        with tempfile.TemporaryDirectory() as tmp:
            out["model"] = model_accuracy(Path(tmp), args.steps, args.seed)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
