"""Unsupervised mineral prospectivity: stack source grids, train without labels, map, evaluate.

lode prospect stack  --spec REGION/layers.json --out stack.zarr [--allow-sparse]
                     (layers: grids, fault lines, point samples in CSV / GeoParquet)
lode prospect train  --stack stack.zarr --out mae.pt [--kind mae|cae] [--steps N] [--workers N] [--no-ray]
lode prospect map    --stack stack.zarr --method mae --model mae.pt --out map.zarr [--geotiff map.tif]
                     (and map.tif beside it: a cloud-optimised GeoTIFF)
lode prospect evaluate --map map.zarr --deposits REGION/deposits.csv [--split heldout] --out eval/
                     (metrics.json, deposit_ranks.csv, plots)
lode prospect run    --region REGION --out OUT   (all of the above, MAE and baselines)

A synthetic region with planted deposits comes from ``lode synth region``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from engine.prospect.select import METHODS
from jobs.common import location
from jobs.contract import Job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = sub.add_parser(
        "stack", help="align, transform and stack the layers of a spec (grids, lines, point samples) into zarr"
    )
    p.add_argument("--spec", required=True, type=location, help="layers.json")
    p.add_argument("--out", required=True, type=location)
    _sparse_arg(p)

    p = sub.add_parser("train", help="train the MAE (or the conv-AE baseline) without labels, with Ray Train")
    p.add_argument("--stack", required=True, type=location)
    p.add_argument("--out", required=True, type=location)
    p.add_argument("--kind", choices=("mae", "cae"), default="mae")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=5, help="checkpoints (OUT.train/last) over the steps")
    p.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers; --batch is split over them")
    p.add_argument("--gpu", action="store_true", default=None, help="GPU workers (default: when the cluster has GPUs)")
    p.add_argument("--resume", type=location, help="checkpoint folder to continue from (OUT.train/last)")
    p.add_argument("--no-ray", action="store_true", help="train in this process instead of on Ray Train")

    p = sub.add_parser("map", help="prospectivity map by blocked sliding window")
    _map_args(p)
    p.add_argument("--out", required=True, type=location)
    p.add_argument(
        "--geotiff",
        type=location,
        help="where to write the prospectivity as a cloud-optimised GeoTIFF (default: beside --out, NAME.tif; "
        "none with --max-blocks)",
    )
    p.add_argument("--no-ray", action="store_true", help="map in this process instead of on Ray")
    p.add_argument("--max-blocks", type=int, help="score only the first N pending blocks (timing and memory runs)")

    p = sub.add_parser(
        "evaluate", help="ROC AUC, success-rate curve, top-10%% capture, prediction-area plot (PNG + JSON)"
    )
    p.add_argument("--map", required=True, type=location, action="append", help="map store(s); repeat to compare")
    p.add_argument("--deposits", required=True, type=location, help="CSV with easting, northing (and optional split)")
    p.add_argument("--split", default="heldout", help="deposit split to score on ('all' for every deposit)")
    p.add_argument("--out", required=True, type=location)

    p = sub.add_parser("run", help="stack, train, map with the MAE and every baseline, and evaluate on a region folder")
    p.add_argument("--region", required=True, type=location, help="folder with layers.json and deposits.csv")
    p.add_argument("--out", required=True, type=location)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--sigma", type=float, default=0.0)
    p.add_argument("--shifts", type=int, default=2)
    p.add_argument("--no-ray", action="store_true", help="train and map in this process instead of on Ray")
    _sparse_arg(p)


def default_outputs(args: argparse.Namespace) -> None:
    if args.action == "map" and args.geotiff is None and args.max_blocks is None:
        args.geotiff = beside(args.out, ".tif")


def beside(out: Path | str, suffix: str) -> Path | str:
    """``out`` (a path or URI) with its ``.zarr`` suffix, if any, replaced by ``suffix``."""
    text = str(out).rstrip("/")
    return type(out)(text.removesuffix(".zarr") + suffix)


def _sparse_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-sparse",
        action="store_true",
        help="stack a layer valid on under 5 percent of the grid (refused by default), with a warning",
    )


def _map_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stack", required=True, type=location)
    p.add_argument("--method", choices=METHODS, default="mae")
    p.add_argument("--model", type=location, help="checkpoint for mae / cae")
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--sigma", type=float, default=0.0, help="Gaussian smoothing of the component maps, in cells")
    p.add_argument(
        "--shifts",
        type=int,
        default=2,
        help="mae/cae: average shifts x shifts window lattices offset by 8 cells (1 = one lattice)",
    )
    p.add_argument("--seed", type=int, default=0)


def _train(
    stack: Path, out: Path, kind: str, steps: int, batch: int, lr: float, seed: int, no_ray: bool, **more: Any
) -> dict:
    from engine.prospect.train import train

    return train(stack, out, kind, steps, batch, lr, seed, executor="local" if no_ray else "ray", **more)


def _map(
    stack: Path,
    method: str,
    model: Path | None,
    out: Path,
    block: int,
    sigma: float,
    seed: int,
    shifts: int = 2,
    no_ray: bool = False,
    max_blocks: int | None = None,
) -> Path:
    """Map on the raster runner: on Ray (model actors on the cluster's GPUs when it has them), or in
    this process with ``no_ray``; a killed map resumes on rerun."""
    from engine.prospect.score import score_map
    from engine.prospect.select import make_scorer
    from engine.raster.runner import RunOptions

    scorer = make_scorer(method, stack, model, seed, shifts)  # checks the stack and checkpoint before Ray starts
    options = RunOptions(executor="serial")
    if not no_ray:
        from engine.io import fs

        options = RunOptions(executor="ray", remote_args=fs.ray_remote_args(), in_flight=4, read_in_compute=True)
    return score_map(
        stack,
        scorer,
        out,
        block=block,
        sigma=sigma,
        attrs={"method": method, "shifts": shifts, "seed": seed},
        max_blocks=max_blocks,
        options=options,
    )


def _evaluate(maps: list[Path], deposits: Path, split: str, out: Path) -> dict:
    from engine.prospect.select import evaluate_maps

    table = evaluate_maps(maps, deposits, split, out)
    print(json.dumps(table, indent=2))
    return table


def run(cfg: Any) -> int:
    if cfg.action == "stack":
        from engine.prospect.stack import build_stack

        print(f"stack written to {build_stack(cfg.spec, cfg.out, allow_sparse=cfg.allow_sparse)}")
    elif cfg.action == "train":
        more = {"epochs": cfg.epochs, "workers": cfg.workers, "gpu": cfg.gpu, "resume": cfg.resume}
        metrics = _train(cfg.stack, cfg.out, cfg.kind, cfg.steps, cfg.batch, cfg.lr, cfg.seed, cfg.no_ray, **more)
        print(json.dumps(metrics, indent=2, default=str))
    elif cfg.action == "map":
        out = _map(
            cfg.stack,
            cfg.method,
            cfg.model,
            cfg.out,
            cfg.block,
            cfg.sigma,
            cfg.seed,
            cfg.shifts,
            cfg.no_ray,
            cfg.max_blocks,
        )
        if cfg.geotiff:
            from engine.prospect.score import write_geotiff

            write_geotiff(out, cfg.geotiff)
        print(f"map written to {out}")
    elif cfg.action == "evaluate":
        _evaluate(cfg.map, cfg.deposits, cfg.split, cfg.out)
    elif cfg.action == "run":
        _run_all(cfg)
    return 0


def _run_all(cfg: Any) -> None:
    from engine.export.survey import deposits_geojson
    from engine.prospect.score import write_geotiff
    from engine.prospect.stack import build_stack, open_stack

    out: Path = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t = time.perf_counter()
    stack = build_stack(cfg.region / "layers.json", out / "stack.zarr", allow_sparse=cfg.allow_sparse)
    timings["stack"] = time.perf_counter() - t
    maps = []
    for method in [m.strip() for m in cfg.methods.split(",") if m.strip()]:
        t = time.perf_counter()
        model = None
        if method in ("mae", "cae"):
            model = out / f"{method}.pt"
            _train(stack, model, method, cfg.steps, 32, 1e-3, 0, cfg.no_ray)
        maps.append(
            _map(stack, method, model, out / f"map_{method}.zarr", cfg.block, cfg.sigma, 0, cfg.shifts, cfg.no_ray)
        )
        timings[method] = time.perf_counter() - t
    for m in maps:
        write_geotiff(m, beside(m, ".tif"))
    deposits_geojson(cfg.region / "deposits.csv", open_stack(stack).grid.crs, out / "deposits.geojson")
    _evaluate(maps, cfg.region / "deposits.csv", "heldout", out / "eval")
    (out / "timings.json").write_text(json.dumps(timings, indent=2))


JOB = Job(
    "prospect",
    add_arguments,
    run,
    description=__doc__,
    outputs={"geotiff": "file"},
    file_out={"action": ("train",)},
    default_outputs=default_outputs,
)

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
