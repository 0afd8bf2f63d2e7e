"""Prospectivity benchmark: the MAE against isolation forest (measured channels and all
channels), PCA reconstruction error and a small convolutional autoencoder, on held-out
deposits of synthetic regions.

    python -m benchmarks.prospect --json OUT.json [--size 512] [--seeds 1,2,3] [--steps 400] \
        [--sigmas 0,4,8] [--shifts 1,2]
    python -m benchmarks.prospect --json VAL.json --seeds 4,5 --split all   (validation regions: choices are made here)
    python -m benchmarks.prospect --json OUT.json --memory-size 4096 --memory-blocks 4

Per region: synthesise, stack, train the MAE and the conv AE on that region without
labels (Ray Train unless ``--no-ray``), fit the per-cell baselines, map, and score
each map on the region's held-out deposits (and its training deposits, reported),
raw and after the same valid-cell Gaussian smoothing for every sigma; the window models
(MAE, conv AE) also with ``--shifts`` window lattices. Scoring and post-processing
choices are made on other seeds with ``--split all`` (validation regions), never on the
held-out seeds 1-3; seed 0 was the development region. The table gives the mean over
regions and the pooled figures (all held-out deposits of all regions ranked within
their own region); the JSON is rewritten after every region. ``--memory-size`` instead runs stack +
scoring on one large 10-layer
region and reports the peak memory of each phase; the map's is summed over the map job's processes, Ray's
own included.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("mae", "cae", "iforest", "iforest_all", "pca")
BASELINES = ("cae", "iforest", "iforest_all", "pca")


def _row(m) -> dict:
    return {
        "auc": m.auc,
        "capture_top10": m.capture_top10,
        "success_rate_area": m.success_rate_area,
        "pa_prediction": m.pa_intersection_prediction,
        "pa_area": m.pa_intersection_area,
        "area_ranks": m.area_ranks,
    }


def run_region(
    size: int,
    seed: int,
    steps: int,
    work: Path,
    use_ray: bool,
    sigmas: list[float],
    reuse: bool = False,
    methods: tuple[str, ...] = METHODS,
    split: str = "heldout",
    shifts: tuple[int, ...] = (1,),
    drops: tuple[int, ...] = (0,),
) -> dict:
    """One region: every method mapped once per scoring variant (no smoothing), then each map
    evaluated raw and after the same valid-cell Gaussian smoothing for every sigma in ``sigmas``
    (method[+shiftK][+trimD]@sigma). Variants: ``shifts`` window lattices per axis (mae, cae)
    and ``drops`` largest channel errors left out per cell (mae, cae, pca)."""
    from engine.prospect import baselines
    from engine.prospect import evaluate as ev
    from engine.prospect.score import CellScorer, read_score, score_map, smooth_valid
    from engine.prospect.select import make_scorer
    from engine.prospect.stack import build_stack, open_stack
    from engine.prospect.synth import synth_region, write_region
    from engine.prospect.train import train as train_model

    region = synth_region(size, seed)
    rdir = write_region(region, work / f"region{seed}")
    stack = build_stack(rdir / "layers.json", work / f"stack{seed}.zarr")
    held = region.deposits if split == "all" else region.deposits[region.deposits.split == split]
    train = region.deposits[region.deposits.split == "train"]
    out: dict = {
        "seed": seed,
        "n_heldout": len(held),
        "n_deposits": len(region.deposits),
        "n_decoys": len(region.decoys),
        "methods": {},
        "train_auc": {},
        "seconds": {},
    }
    st = open_stack(stack)
    for method in methods:
        model = None
        if method in ("mae", "cae"):
            model = work / f"{method}{seed}.pt"
            if not (reuse and model.exists()):
                t = time.perf_counter()
                train_model(stack, model, method, steps, 32, 1e-3, seed, executor="ray" if use_ray else "local")
                out["seconds"][method + ":train"] = time.perf_counter() - t
        variants = [
            (k, d)
            for k in (shifts if method in ("mae", "cae") else (1,))
            for d in (drops if method in ("mae", "cae", "pca") else (0,))
        ]
        for k, d in variants:
            t = time.perf_counter()
            variant = method + (f"+shift{k}" if k > 1 else "") + (f"+trim{d}" if d else "")
            if method == "iforest_all":
                scorer = CellScorer(baselines.IsolationForestScorer(baselines.sample_cells(st, seed=seed), seed=seed))
            else:
                scorer = make_scorer(method, stack, model, seed, k, d)
            path = score_map(stack, scorer, work / f"map_{variant}{seed}.zarr")
            out["seconds"][variant] = time.perf_counter() - t
            print(f"region {seed}: {variant} mapped in {out['seconds'][variant]:.0f} s", file=sys.stderr, flush=True)
            comps = [("", "prospectivity")] + (
                [(":" + c, c) for c in ("recon_error", "latent_distance")] if method == "mae" else []
            )
            for suffix, comp in comps:
                s = read_score(path, comp)
                valid = np.isfinite(s)
                for sigma in sigmas:
                    m = s if sigma == 0 else smooth_valid(s, valid, sigma)
                    name = variant + suffix + (f"@{sigma:g}" if sigma else "")
                    out["methods"][name] = _row(ev.evaluate(m, held.row.values, held.col.values))
                    out["train_auc"][name] = ev.evaluate(m, train.row.values, train.col.values).auc
    return out


def summarise(regions: list[dict], model: str = "mae") -> dict:
    """Mean and pooled figures per method on held-out deposits.

    The best baseline is the best of every baseline variant and smoothing by *held-out*
    AUC (chosen with hindsight, in the baselines' favour). The model's figure is
    ``model`` (a method@sigma name), or with ``"auto"`` the MAE variant (score
    component and smoothing) with the best mean AUC on the *training* deposits: the
    held-out deposits never choose it."""
    names = list(regions[0]["methods"])
    table = {}
    for n in names:
        rows = [r["methods"][n] for r in regions]
        ranks = np.concatenate([r["area_ranks"] for r in rows])
        table[n] = {
            "auc_mean": float(np.mean([r["auc"] for r in rows])),
            "auc_min": float(np.min([r["auc"] for r in rows])),
            "capture_top10_mean": float(np.mean([r["capture_top10"] for r in rows])),
            "capture_top10_pooled": float((ranks <= 0.1).mean()),
            "success_rate_area_mean": float(np.mean([r["success_rate_area"] for r in rows])),
            "pa_prediction_mean": float(np.mean([r["pa_prediction"] for r in rows])),
            "pa_area_mean": float(np.mean([r["pa_area"] for r in rows])),
        }
    baselines = [n for n in names if n.split("@")[0].split("+")[0] in BASELINES]
    best = max(baselines, key=lambda n: table[n]["auc_mean"], default=None)
    train_auc = {n: float(np.mean([r["train_auc"][n] for r in regions])) for n in names}
    if model == "auto":
        model = max((n for n in names if n.startswith("mae")), key=lambda n: train_auc[n])
    return {
        "table": table,
        "train_deposit_auc_mean": train_auc,
        "model": model,
        "best_baseline": best,
        "model_minus_best_baseline_auc": table[model]["auc_mean"] - table[best]["auc_mean"] if best else None,
    }


def run_memory(size: int, blocks: int, work: Path, steps: int, reuse: bool = False) -> dict:
    """Stack a ``size``² 10-layer region, train the MAE, and map it with ``lode prospect map`` on Ray
    (``python -m jobs.prospect map`` in a subprocess, as a user runs it), measuring each phase's peak
    memory. The map's figure is the summed RSS (and PSS) over the job's whole process tree, Ray's
    own processes (GCS, raylet, agents, Ray Data's actors, workers) included; stack and train run
    in this process, without Ray.

    ``blocks`` limits the map to the first N of its 512² blocks (0 = all): peak memory of blocked
    scoring does not grow with the block count; time does. ``reuse`` keeps a region, stack and
    model already in ``work`` (the map is measured again; stack and train are not).
    """
    import os
    import subprocess

    import pandas as pd

    from benchmarks.segment_throughput import PeakSampler
    from engine.prospect import evaluate as ev
    from engine.prospect.score import read_score
    from engine.prospect.stack import build_stack, open_stack
    from engine.prospect.synth import synth_region, write_region
    from engine.prospect.train import train

    rdir, stack = work / "big", work / "big.zarr"
    t_synth = t_stack = t_train = 0.0
    mem_stack = mem_train = None
    if not (reuse and (rdir / "layers.json").is_file() and stack.is_dir() and (work / "big.pt").is_file()):
        t0 = time.perf_counter()
        rdir = write_region(synth_region(size, 0), rdir)
        t_synth = time.perf_counter() - t0
        with PeakSampler() as mem_stack:
            t = time.perf_counter()
            stack = build_stack(rdir / "layers.json", stack)
            t_stack = time.perf_counter() - t
        with PeakSampler() as mem_train:
            t = time.perf_counter()
            train(stack, work / "big.pt", "mae", steps, 32, 1e-3, 0, pool_blocks=8, executor="local")
            t_train = time.perf_counter() - t
    shutil.rmtree(work / "big_map.zarr", ignore_errors=True)
    (work / "big_map.zarr.manifest.json").unlink(missing_ok=True)
    root = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        "-m",
        "jobs.prospect",
        "map",
        "--stack",
        str(stack),
        "--method",
        "mae",
        "--model",
        str(work / "big.pt"),
        "--shifts",
        "2",
        "--out",
        str(work / "big_map.zarr"),
    ]
    cmd += ["--max-blocks", str(blocks)] if blocks else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with PeakSampler(pid=proc.pid) as mem_map:
        _, err = proc.communicate()
    t_map = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"map job failed ({proc.returncode}): {err[-3000:]}")
    t = time.perf_counter()
    dep = pd.read_csv(rdir / "deposits.csv")
    metrics = ev.evaluate(read_score(work / "big_map.zarr", partial=bool(blocks)), dep.row.values, dep.col.values)
    t_eval = time.perf_counter() - t
    st = open_stack(stack)
    return {
        "size": size,
        "layers": 10,
        "channels": len(st.channels),
        "train_steps": steps if mem_train else "model reused from --work",
        "map_peak_rss_gib": mem_map.peak_rss / 1024,
        "map_peak_pss_gib": mem_map.peak_pss / 1024,
        "map_processes_at_peak": mem_map.breakdown(),
        "map_measured": "python -m jobs.prospect map on Ray: RSS and PSS summed over the job's processes, "
        "Ray's own included",
        "stack_peak_rss_gib": mem_stack.peak_rss / 1024 if mem_stack else "not re-measured (reused)",
        "train_peak_rss_gib": mem_train.peak_rss / 1024 if mem_train else "not re-measured (reused)",
        "seconds": {"synth": t_synth, "stack": t_stack, "train": t_train, "map": t_map, "evaluate": t_eval},
        "blocks_scored": blocks or "all",
        "blocks_total": (size // 512) ** 2,
        "deposits_evaluable": metrics.n_deposits,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True, type=Path)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--seeds", default="1,2,3", help="region seeds (seed 0 was the development region)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--sigmas", default="0,4", help="post-smoothing sigmas (cells) every map is evaluated at")
    p.add_argument(
        "--model-variant",
        default="mae+shift2",
        help="the map reported as the model (default: the job's map, chosen on validation seeds 4 and 5; "
        "auto: best MAE variant on training deposits)",
    )
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument(
        "--shifts",
        default="1,2",
        help="window-lattice shifts per axis the mae and cae maps are made with (1 = one lattice)",
    )
    p.add_argument("--drop-top", default="0", help="largest channel errors left out per cell, mae / cae / pca variants")
    p.add_argument(
        "--split",
        default="heldout",
        help="deposits scored: heldout, or all (validation regions, never the held-out seeds)",
    )
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--memory-size", type=int, default=0)
    p.add_argument("--memory-blocks", type=int, default=0)
    p.add_argument("--work", type=Path)
    p.add_argument(
        "--reuse-models",
        action="store_true",
        help="keep checkpoints already in --work (rescore only; memory mode: keep the region, stack and model)",
    )
    a = p.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="lode-bench-prospect-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.memory_size:
        result = {"memory": run_memory(a.memory_size, a.memory_blocks, work, a.steps, a.reuse_models)}
    else:
        sigmas = [float(x) for x in a.sigmas.split(",")]
        regions = []
        for s in a.seeds.split(","):
            regions.append(
                run_region(
                    a.size,
                    int(s),
                    a.steps,
                    work,
                    not a.no_ray,
                    sigmas,
                    a.reuse_models,
                    tuple(a.methods.split(",")),
                    a.split,
                    tuple(int(k) for k in a.shifts.split(",")),
                    tuple(int(d) for d in a.drop_top.split(",")),
                )
            )
            result = {
                "size": a.size,
                "steps": a.steps,
                "sigmas": sigmas,
                "split": a.split,
                "regions": regions,
                **summarise(regions, a.model_variant),
            }
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(result, indent=2))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "regions"}, indent=2))


if __name__ == "__main__":
    main()
