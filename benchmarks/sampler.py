"""Balancing patch samplers side by side: Lode's, petroscope 0.0.12's own, uniform random.

``python -m benchmarks.sampler --json OUT`` writes one S1+S2-like synthetic collection with the
Table-1 imbalance (engine.synth associations ``T1-S1``/``T1-S2``: every rare mineral only in half
of the images, as small grains), draws ``--patches`` patches of ``--patch`` px from each sampler
on the same masks and reports per-class pixel shares, ``balancing_quality`` = 1 − (max − min) / sum,
``max_min_ratio`` and ``patches_per_s`` under ``lode``, ``petroscope`` and ``uniform``.

petroscope runs in its own environment (``--petroscope-venv``, built from the package registry
on first use: its dependencies are not part of Lode's lock) in a subprocess on the same files,
with default parameters (``ClassBalancedPatchDataset(pairs, patch_size, seed)``), and returns its
pixel tallies. Lode's sampler also cuts the image and mask of every patch, as petroscope's does.

Also: map build time and peak memory (fresh process, ``ru_maxrss``) for a 12000×8000 mask with
15 classes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

PETROSCOPE = "petroscope==0.0.12"
ROOT = Path(__file__).resolve().parents[1]


def _torch_pins() -> list[str]:
    """petroscope's package imports torch and torchvision (an optional extra of it): the lock's pins."""
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    return [next((ln.strip() for ln in lock if ln.startswith(f"{n}==")), n) for n in ("torch", "torchvision")]


def collection(root: Path, images: int, size: tuple[int, int], seed: int) -> Path:
    from engine.synth import write_lumenstone

    if not (root / "synth.json").is_file():
        write_lumenstone(
            root, n_train=images, n_test=0, size=size, associations=("T1-S1", "T1-S2"), seed=seed, grain_diameter=40.0
        )
    return root


def summary(pixels: dict[int, int], codes: list[int], patches: int, seconds: float) -> dict:
    p = np.array([pixels.get(c, 0) for c in codes], np.float64)
    return {
        "shares": {str(c): float(v / p.sum()) for c, v in zip(codes, p)},
        "balancing_quality": float(1 - (p.max() - p.min()) / p.sum()),
        "max_min_ratio": float(p.max() / p.min()) if p.min() > 0 else float("inf"),
        "patches_per_s": patches / seconds,
        "sample_s": seconds,
    }


def run_lode(masks, images, codes, patch: int, n: int, seed: int, strength: float) -> dict:
    from engine.train.sampler import BalancedPatchSampler, SamplerParams

    t0 = time.perf_counter()
    s = BalancedPatchSampler(masks, SamplerParams(classes=tuple(codes), patch=patch, strength=strength), seed=seed)
    t1 = time.perf_counter()
    seen = set()
    for _ in range(n):
        i, y0, x0 = s.draw()
        seen.add((i, y0, x0))
        np.ascontiguousarray(images[i][y0 : y0 + patch, x0 : x0 + patch])
        np.ascontiguousarray(masks[i][y0 : y0 + patch, x0 : x0 + patch])
    t2 = time.perf_counter()
    out = summary(dict(zip(codes, s.tally.pixels.tolist())), codes, n, t2 - t1)
    population = np.sum([np.bincount(m.ravel(), minlength=256)[codes] for m in masks], axis=0)
    rarest = int(np.argmin(population))
    best = max(float(mp[rarest].max()) for mp in s.maps) ** (1 / s.params.alpha)
    return out | {
        "setup_s": t1 - t0,
        "distinct_patches": len(seen),
        "rarest_class": codes[rarest],
        "rarest_class_best_patch_share": best,
        "params": {
            "alpha": s.params.alpha,
            "strength": strength,
            "image_exponent": s.params.image_exponent,
            "downscale": s.params.downscale,
            "candidates": s.params.candidates,
        },
    }


def petroscope_python(venv: Path) -> Path:
    py = venv.absolute() / "bin" / "python"
    # petroscope writes petroscope.log into its working directory on import
    ready = (
        py.exists()
        and subprocess.run(
            [str(py), "-c", "import petroscope.segmentation.balancer"], capture_output=True, cwd=tempfile.gettempdir()
        ).returncode
        == 0
    )
    if not ready:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", PETROSCOPE, *_torch_pins()], check=True)
    return py


def run_petroscope(venv: Path, pairs, codes, patch: int, n: int, seed: int) -> dict:
    py = petroscope_python(venv)
    args = {"pairs": [[str(i), str(m)] for i, m in pairs], "patch": patch, "patches": n, "seed": seed}
    r = subprocess.run(
        [str(py), str(ROOT / "benchmarks" / "_petroscope_sampler.py")],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
        cwd=tempfile.gettempdir(),
    )
    if r.returncode:
        raise RuntimeError(f"petroscope sampler failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout)
    pixels = {int(k): v for k, v in res["pixels"].items()}
    return summary(pixels, codes, n - 1, res["sample_s"]) | {
        "setup_s": res["setup_s"],
        "version": res["version"],
        "balancing_quality_own": res["balancing_quality_own"],
        "params": "defaults (balancing_strength 0.8, class_area_consideration 0.5, "
        "patch_positioning_accuracy 0.5, acceleration 8)",
    }


def _maps_child(mask_path: str, classes: int, patch: int, downscale: int) -> dict:
    from engine.io.images import read_mask
    from engine.train.sampler import class_area_maps

    mask = read_mask(mask_path)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t = time.perf_counter()
    maps = class_area_maps(mask, list(range(classes)), patch, downscale)
    secs = time.perf_counter() - t
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "shape": list(mask.shape),
        "classes": classes,
        "classes_present": int(len(np.unique(mask))),
        "patch": patch,
        "downscale": downscale,
        "seconds": secs,
        "maps_mib": maps.nbytes / 2**20,
        "mask_mib": mask.nbytes / 2**20,
        "peak_rss_gib": peak / 2**20,
        "rss_after_reading_mask_gib": base / 2**20,
        "build_peak_allocated_mib": traced / 2**20,
    }


def map_build(shape: tuple[int, int], classes: int, patch: int, downscale: int, work: Path) -> dict:
    """A fresh process reads the mask file and builds the maps: its peak resident memory is the whole
    process's (interpreter, libraries, the mask, the maps)."""
    import cv2

    from benchmarks.analyze_grains import synthetic_labels

    path = work / "big_mask.png"
    cv2.imwrite(str(path), synthetic_labels(shape, classes, seed=3))
    code = (
        "import json, sys; from benchmarks.sampler import _maps_child; "
        f"json.dump(_maps_child({str(path)!r}, {classes}, {patch}, {downscale}), sys.stdout)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    path.unlink()
    if r.returncode:
        raise RuntimeError(f"map build failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sampler", description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True, help="output JSON")
    ap.add_argument("--patches", type=int, default=10_000)
    ap.add_argument("--patch", type=int, default=384)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--size", type=int, nargs=2, default=(1536, 2048), metavar=("H", "W"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None, help="collection folder (default: a temporary one)")
    ap.add_argument("--petroscope-venv", default=str(ROOT / ".venv-petroscope"))
    ap.add_argument("--big", type=int, nargs=2, default=(8000, 12000), metavar=("H", "W"))
    args = ap.parse_args()

    from engine.io.images import read_mask, read_rgb
    from engine.train.data import pairs as list_pairs

    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="lode-sampler-")
        args.data = tmp.name
    root = collection(Path(args.data), args.images, tuple(args.size), args.seed)
    pairs = list_pairs(root, "train")
    masks = [read_mask(m) for _, m in pairs]
    images = [read_rgb(i) for i, _ in pairs]
    population = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=256)
    codes = [int(c) for c in np.flatnonzero(population) if c != 255]
    res: dict = {
        "collection": {
            "images": len(pairs),
            "size": list(args.size),
            "associations": ["T1-S1", "T1-S2"],
            "population_shares": {str(c): float(population[c] / population.sum()) for c in codes},
            "images_with_class": {str(c): int(sum((m == c).any() for m in masks)) for c in codes},
        },
        "patches": args.patches,
        "patch": args.patch,
    }
    res["lode"] = run_lode(masks, images, codes, args.patch, args.patches, args.seed, strength=1.0)
    res["uniform"] = run_lode(masks, images, codes, args.patch, args.patches, args.seed, strength=0.0)
    res["petroscope"] = run_petroscope(Path(args.petroscope_venv), pairs, codes, args.patch, args.patches, args.seed)
    lo, pe = res["lode"], res["petroscope"]
    res["lode_vs_petroscope"] = {
        "max_min_ratio": lo["max_min_ratio"] / pe["max_min_ratio"],
        "balancing_quality_diff": lo["balancing_quality"] - pe["balancing_quality"],
        "patches_per_s": lo["patches_per_s"] / pe["patches_per_s"],
    }
    res["maps_big"] = map_build(tuple(args.big), 15, args.patch, 8, Path(args.data))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
