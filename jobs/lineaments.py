"""Magnetic anomaly lineaments: axes of linear anomalies (dykes) as vector lines.

  lode lineaments GRID --model CKPT --out OUT        U-Net axes of a survey grid
  lode lineaments GRID --method classical --out OUT  classical baseline (RTP, TGA, Blakely-Simpson)
  lode lineaments evaluate PRED.geojson TRUTH.geojson  buffer precision/recall/F1 at 1 and 2 cells
  lode lineaments train --data SET.zarr --out DIR      train the U-Net with Ray Train [--workers N] [--gpu]

Synthetic surveys with their true axes come from ``lode synth survey`` (a training set, or with
--files held-out netCDF grids and truth GeoJSON).

GRID is a GeoTIFF, netCDF or zarr grid (dims northing/easting or y/x, metres), opened lazily.
OUT receives the probability grid axis_probability.zarr (chunked by --block, CRS and transform
in its attributes; --geotiff also writes axis_probability.tif), the axes as lineaments.geojson and
lineaments.gpkg (with the grid's CRS), rose.png,
summary.json, manifest.json and the per-block inference record (_inference/): a rerun into the same OUT
skips the blocks already done. The classical route writes total_gradient_amplitude in GRID's format;
on a grid larger than --block it filters block by block (through OUT/_classical/, removed after).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from jobs.contract import Job

ACTIONS = ("evaluate", "train")
MOVED = {"synth": "lode synth survey", "score": "lode lineaments evaluate"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("target", help="survey grid to process, or one of: evaluate, train")
    parser.add_argument("inputs", nargs="*", help="for evaluate: PRED.geojson TRUTH.geojson")
    parser.add_argument("--out", help="output folder (grid, train) or file (evaluate JSON)")
    parser.add_argument("--model", help="U-Net checkpoint (model.pt)")
    parser.add_argument(
        "--method", choices=("unet", "classical"), default=None, help="default: unet with --model, else classical"
    )
    parser.add_argument("--variable", help="data variable of a netCDF/zarr dataset")
    parser.add_argument(
        "--inclination", type=float, help="field inclination, degrees (classical; default from grid attributes)"
    )
    parser.add_argument(
        "--declination", type=float, help="field declination, degrees (classical; default from grid attributes)"
    )
    parser.add_argument(
        "--threshold", type=float, help="probability threshold for axis cells (default from model card)"
    )
    parser.add_argument("--min-length", type=float, default=10.0, help="shortest line kept, in cells")
    parser.add_argument(
        "--block",
        type=int,
        default=2048,
        help="block size in cells: one unit of U-Net inference and zarr chunk; the classical route "
        "filters grids larger than it block by block",
    )
    parser.add_argument(
        "--executor", choices=("ray", "serial"), default="ray", help="U-Net inference on Ray (default) or in process"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="GPU per model actor when the cluster has one (auto)",
    )
    parser.add_argument("--geotiff", action="store_true", help="U-Net: also export the probability grid as GeoTIFF")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="windows per forward pass (default: 16 on a GPU, 4 on a CPU); train: the global batch (default 8)",
    )
    parser.add_argument("--stride", type=int, help="window step in cells (default: half the model window)")
    parser.add_argument("--cell", type=float, help="evaluate: cell size in map units (default from PRED properties)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="train: zarr training set")
    parser.add_argument("--encoder", default="vgg16_bn", help="train: smp encoder")
    parser.add_argument("--window", type=int, default=128, help="train: window size")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-minutes", type=float, help="train: stop after the epoch that passes this time")
    parser.add_argument("--workers", type=int, default=1, help="train: data-parallel Ray Train workers")
    parser.add_argument(
        "--gpu", action="store_true", default=None, help="train: GPU workers (default: when the cluster has GPUs)"
    )
    parser.add_argument("--resume", help="train: checkpoint folder to continue from (OUT/last)")


def _need(cfg: Any, *names: str) -> None:
    from engine.errors import LodeInputError

    for name in names:
        if getattr(cfg, name) in (None, ""):
            raise LodeInputError(f"--{name.replace('_', '-')}", f"required for 'lode lineaments {cfg.target}'")


def run_grid(cfg: Any) -> int:
    from engine.geophys.grid import check_values, open_grid, write_grid
    from engine.geophys.lineaments import (
        ClassicalParams,
        VectorParams,
        check_checkpoint,
        classical_lineaments,
        probability_lines,
        unet_probability_zarr,
        write_lines,
        write_rose,
    )

    _need(cfg, "out")
    source = Path(cfg.target)
    out = Path(cfg.out)
    method = cfg.method or ("unet" if cfg.model else "classical")
    if method == "unet":
        _need(cfg, "model")
    da = open_grid(source, cfg.variable, cfg.block)
    check_values(da, source, warn_holes=True)  # one streamed pass, before the model loads and Ray starts
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if method == "unet":
        card = check_checkpoint(cfg.model)
        threshold = cfg.threshold if cfg.threshold is not None else card.threshold
        params = VectorParams(threshold=threshold, min_length_cells=cfg.min_length)
        grid_path, _ = unet_probability_zarr(
            source,
            cfg.variable,
            cfg.model,
            out,
            block=cfg.block,
            batch_size=cfg.batch_size,
            stride=cfg.stride,
            executor=cfg.executor,
            device=cfg.device,
        )
        result = open_grid(grid_path, "axis_probability", cfg.block)
        lines = probability_lines(result, da, params)
        if cfg.geotiff:
            write_grid(result.load(), out / "axis_probability.tif")
    else:
        work = out / "_classical"
        result, lines = classical_lineaments(
            da,
            cfg.inclination,
            cfg.declination,
            ClassicalParams(min_length_cells=cfg.min_length),
            block=cfg.block,
            work=work,
        )
        suffix = source.suffix.lower() if source.suffix.lower() in (".tif", ".tiff", ".nc", ".zarr") else ".zarr"
        grid_path = write_grid(result, out / f"total_gradient_amplitude{suffix}")
        if suffix not in (".tif", ".tiff"):  # QGIS reads the CRS of a GeoTIFF, not of our netCDF/zarr attributes
            write_grid(result, out / "total_gradient_amplitude.tif")
        shutil.rmtree(work, ignore_errors=True)
    crs = da.attrs.get("crs")
    cell = float(abs(da.easting.values[1] - da.easting.values[0]))
    vectors = [out / "lineaments.geojson", out / "lineaments.gpkg"]
    for path in vectors:
        write_lines(lines, path, crs, {"cell_size": cell, "method": method, "source": str(source)})
    write_rose(lines, out / "rose.png")
    summary = {
        "grid": str(source),
        "method": method,
        "shape": list(da.shape),
        "cell_size": cell,
        "lines": len(lines),
        "total_length_m": float(sum(ln.length_m for ln in lines)),
        "seconds": round(time.perf_counter() - t0, 2),
        "outputs": [str(grid_path), *map(str, vectors), str(out / "rose.png")],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


def run_evaluate(cfg: Any) -> int:
    from engine.errors import LodeInputError
    from engine.geophys.evaluate import buffer_scores
    from engine.geophys.lineaments import read_geojson_lines

    if len(cfg.inputs) != 2:
        raise LodeInputError("evaluate", "expected PRED.geojson TRUTH.geojson")
    pred_path, truth_path = map(Path, cfg.inputs)
    cell = cfg.cell
    if cell is None:
        cell = json.loads(pred_path.read_text()).get("properties", {}).get("cell_size") if pred_path.is_file() else None
    if cell is None:
        raise LodeInputError(pred_path, "no cell_size property: pass --cell")
    pred, truth = read_geojson_lines(pred_path), read_geojson_lines(truth_path)
    scores = {f"{k}_cells": buffer_scores(pred, truth, k * float(cell)) for k in (1, 2)}
    text = json.dumps({"pred": str(pred_path), "truth": str(truth_path), "cell_size": cell, **scores}, indent=2)
    if cfg.out:
        Path(cfg.out).write_text(text)
    print(text)
    return 0


def run_train(cfg: Any) -> int:
    from engine.geophys.train import TrainConfig, train

    _need(cfg, "data", "out")
    options = TrainConfig(
        data=cfg.data,
        out=cfg.out,
        encoder=cfg.encoder,
        window=cfg.window,
        epochs=cfg.epochs,
        steps_per_epoch=cfg.steps_per_epoch,
        lr=cfg.lr,
        seed=cfg.seed,
        max_minutes=cfg.max_minutes,
        **({"batch_size": cfg.batch_size} if cfg.batch_size else {}),
        workers=cfg.workers,
        gpu=cfg.gpu,
        resume=cfg.resume,
    )
    print(json.dumps({"checkpoint": str(train(options))}))
    return 0


def run(cfg: Any) -> int:
    if cfg.target in MOVED:
        from engine.errors import LodeInputError

        raise LodeInputError(f"lode lineaments {cfg.target}", f"now '{MOVED[cfg.target]}'")
    if cfg.target == "evaluate":
        return run_evaluate(cfg)
    if cfg.target == "train":
        return run_train(cfg)
    return run_grid(cfg)


JOB = Job("lineaments", add_arguments, run, description=__doc__, file_out={"target": ("evaluate",)})

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
