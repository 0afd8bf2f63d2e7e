"""Lineament accuracy on held-out synthetic surveys: U-Net vs the classical baseline.

    python -m benchmarks.lineaments --json OUT --model CKPT [--n 20 --size 1024 --seed 100000]

Surveys use unseen seeds (training sets use SeedSequence([seed, i]) with small seeds; these use
plain integer seeds from --seed on), noise 0.5 nT, inclinations 30-90 degrees. Both methods
are scored by buffer precision/recall/F1 at 1 and 2 cells against the true axes, on the same
surveys in the same run.

    python -m benchmarks.lineaments --json OUT --memory-size 8192 [--model CKPT] [--nice 19]

Memory mode: a ``size``² survey grid (a mosaic of synthetic surveys of ``--memory-tile`` cells
with one field geometry, a NaN hole in the middle) written as a GeoTIFF, then the whole route
``lode lineaments GRID --model CKPT --out OUT`` (read, blocked U-Net inference, threshold,
skeletonise, vectorise, write grid/GeoJSON/rose) and the classical route run each in their own
subprocess while the summed RSS and PSS of the job's process tree and of every process of its
own Ray session (its own ``RAY_TMPDIR``: GCS, raylet, workers, Ray Data actors) are sampled,
reported for the inference phase and for what follows it (vectorisation, after Ray shuts down). Without ``--model`` the
U-Net is the architecture ``lode lineaments train`` builds (VGG-16-bn U-Net, window 128) with
random weights: the inference buffers do not depend on the weights (the mask the vectoriser
walks does; the figure reports its size).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _cached_survey(seed: int, cfg, cache: str | None):
    from engine.geophys.synth import Survey, make_survey
    from engine.io.atomic import atomic_path

    if cache is None:
        return make_survey(seed, cfg)
    path = Path(cache) / f"survey_{seed}_{cfg.shape[0]}x{cfg.shape[1]}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        axes = [z[f"axis_{i}"] for i in range(int(z["n_axes"]))]
        return Survey(
            z["anomaly"], float(z["spacing"]), float(z["inclination"]), float(z["declination"]), axes, z["target"]
        )
    s = make_survey(seed, cfg)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            anomaly=s.anomaly,
            target=s.target,
            spacing=s.spacing_m,
            inclination=s.inclination,
            declination=s.declination,
            n_axes=len(s.axes),
            **{f"axis_{i}": a for i, a in enumerate(s.axes)},
        )
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True)
    p.add_argument("--model", help="U-Net checkpoint; without it only the classical baseline runs")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--threshold", type=float)
    p.add_argument("--stride", type=int)
    p.add_argument("--cache", help="folder to keep generated surveys in (reused when present)")
    p.add_argument("--skip-classical", action="store_true")
    p.add_argument("--skip-unet", action="store_true", help="memory mode: classical route only")
    p.add_argument("--memory-size", type=int, default=0, help="memory mode: grid size in cells")
    p.add_argument("--memory-tile", type=int, default=1024)
    p.add_argument("--nice", type=int, default=0, help="memory mode: niceness of the measured routes")
    p.add_argument("--work", help="memory mode: working folder (default: a temporary one)")
    p.add_argument("--reuse-grid", action="store_true", help="memory mode: keep a grid already in --work")
    p.add_argument(
        "--time-limit", type=float, default=0.0, help="memory mode: stop each route after this many seconds (partial)"
    )
    p.add_argument(
        "--block",
        type=int,
        default=2048,
        help="the job's --block (memory mode); the classical route's block (held-out mode)",
    )
    p.add_argument("--executor", choices=("ray", "serial"), default="ray", help="memory mode: the job's --executor")
    args = p.parse_args(argv)
    if args.memory_size:
        return _memory_main(args)

    import torch

    from engine.geophys.evaluate import buffer_scores
    from engine.geophys.lineaments import ClassicalParams, VectorParams, classical_lineaments, unet_lineaments
    from engine.geophys.synth import SurveyConfig

    cfg = SurveyConfig(
        shape=(args.size, args.size), noise_nt=args.noise, inclination_range=(30.0, 90.0), southern_fraction=0.0
    )
    model = card = None
    if args.model:
        from engine.geophys.model import load_checkpoint, pick_device

        model, card = load_checkpoint(args.model, pick_device())
        torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for i in range(args.n):
        seed = args.seed + i
        t0 = time.perf_counter()
        s = _cached_survey(seed, cfg, args.cache)
        da, truth = s.to_dataarray(), s.axes_lines()
        row: dict = {
            "seed": seed,
            "inclination": round(s.inclination, 1),
            "declination": round(s.declination, 1),
            "true_km": sum(t.length for t in truth) / 1000,
        }
        t1 = time.perf_counter()
        if not args.skip_classical:
            _, lines = classical_lineaments(da, params=ClassicalParams(), block=args.block)
            for k in (1, 2):
                row[f"classical_{k}"] = buffer_scores([ln.line for ln in lines], truth, k * s.spacing_m)
        t2 = time.perf_counter()
        row["classical_s"] = t2 - t1
        if model is not None:
            vp = VectorParams(threshold=args.threshold if args.threshold is not None else card.threshold)
            _, lines = unet_lineaments(da, model, card, vp, stride=args.stride)
            t3 = time.perf_counter()
            for k in (1, 2):
                row[f"unet_{k}"] = buffer_scores([ln.line for ln in lines], truth, k * s.spacing_m)
            row["unet_s"] = t3 - t2
        row["synth_s"] = t1 - t0
        rows.append(row)
        print(
            json.dumps(
                {k: (v if not isinstance(v, dict) else {a: round(b, 3) for a, b in v.items()}) for k, v in row.items()}
            ),
            flush=True,
        )
    summary: dict = {
        "n": args.n,
        "size": args.size,
        "noise_nt": args.noise,
        "seed0": args.seed,
        "model": args.model,
        "card": card.model_dump(mode="json") if card is not None else None,
        "classical_block": args.block,
    }
    for method in ("classical", "unet"):
        for k in (1, 2):
            key = f"{method}_{k}"
            if key in rows[0]:
                summary[f"mean_{key}"] = {
                    m: float(np.mean([r[key][m] for r in rows])) for m in ("precision", "recall", "f1")
                }
    if "mean_unet_2" in summary and "mean_classical_2" in summary:
        summary["unet_minus_classical_f1_2"] = summary["mean_unet_2"]["f1"] - summary["mean_classical_2"]["f1"]
    import resource

    summary["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "surveys": rows}, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def _mosaic_grid(size: int, tile: int, path: Path, seed: int, unique: int = 4) -> dict:
    """Write a ``size``² GeoTIFF mosaic of ``unique`` synthetic surveys (inclination 60, declination
    10), each placed rotated/flipped in turn, with a NaN hole."""
    from engine.geophys.grid import make_dataarray, write_grid
    from engine.geophys.synth import SurveyConfig, make_survey

    cfg = SurveyConfig(shape=(tile, tile), noise_nt=0.5)
    tiles = [make_survey(seed + k, cfg, inclination=60.0, declination=10.0).anomaly for k in range(unique)]
    grid = np.empty((size, size), np.float32)
    k = 0
    for r in range(0, size, tile):
        for c in range(0, size, tile):
            t = np.rot90(tiles[k % unique], k // unique)
            grid[r : r + tile, c : c + tile] = (t if (k // (4 * unique)) % 2 == 0 else t[:, ::-1])[
                : size - r, : size - c
            ]
            k += 1
    yy, xx = np.ogrid[:size, :size]
    hole = (yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 16) ** 2
    grid[hole] = np.nan
    da = make_dataarray(
        grid,
        cfg.spacing_m,
        (0.0, 0.0),
        crs="EPSG:32633",
        attrs={"inclination": 60.0, "declination": 10.0, "units": "nT"},
    )
    write_grid(da, path)
    return {
        "size": size,
        "tiles": k,
        "unique_surveys": unique,
        "hole_cells": int(hole.sum()),
        "spacing_m": cfg.spacing_m,
    }


def _ray_tagged(tag: str) -> list[int]:
    """Pids of the processes whose command line names ``tag`` (the route's own Ray temp folder:
    GCS, raylet, workers, Ray Data actors; they are not all descendants of the job process)."""
    import psutil

    pids = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(tag in a for a in p.info["cmdline"] or ()):
                pids.append(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


def _route_memory(pid: int, tag: str) -> list[tuple[str, float, float]]:
    """``(name, RSS, PSS)`` (MiB) of each process of the job's tree and of its Ray session."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        procs = {}
    for q in _ray_tagged(tag):
        if q not in procs:
            try:
                procs[q] = psutil.Process(q)
            except psutil.NoSuchProcess:
                continue
    from benchmarks.segment_throughput import process_memory

    return process_memory(procs.values())


def _measure_route(
    cmd: list[str], nice: int, time_limit: float = 0.0, status: Path | None = None, blocks_total: int = 0
) -> dict:
    """Run one ``jobs.lineaments`` route in a subprocess with its own Ray temp folder; peak summed
    RSS/PSS of the job process, its descendants and every process of its Ray session (sampled
    every 0.5 s), split into the inference phase (until every block is recorded done under
    ``status``) and what follows (vectorisation and writes, Ray shut down), and a timeline
    (seconds, RSS GiB, PSS GiB, processes, blocks done) every ~10 s. With ``time_limit`` the route
    is stopped after that many seconds and reported as partial."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import threading

    tag = tempfile.mkdtemp(prefix="lbr")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_TMPDIR": tag, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    full = (["nice", "-n", str(nice)] if nice else []) + [sys.executable, "-m", "jobs.lineaments", *cmd]
    t = time.perf_counter()
    proc = subprocess.Popen(
        full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    err_tail: list[str] = []

    def read_err() -> None:
        for line in proc.stderr:
            err_tail.append(line)
            del err_tail[:-50]

    def done() -> int:
        return len(list(status.glob("*.json"))) if status is not None and status.is_dir() else 0

    peaks = {"inference": [0.0, 0.0, 0], "after_inference": [0.0, 0.0, 0]}
    at_peak: dict[str, list] = {"inference": [], "after_inference": []}
    timeline: list[list[float]] = []
    stop = threading.Event()

    def sample() -> None:
        last = -10.0
        while not stop.is_set():
            each = _route_memory(proc.pid, tag)
            rss, pss, n = sum(e[1] for e in each), sum(e[2] for e in each), len(each)
            k = done()
            name = "after_inference" if blocks_total and k >= blocks_total else "inference"
            phase = peaks[name]
            if rss > phase[0]:
                phase[:] = [rss, max(phase[1], pss), n]
                at_peak[name] = sorted(each, key=lambda e: -e[1])
            phase[1] = max(phase[1], pss)
            now = time.perf_counter() - t
            if now - last >= 10:
                timeline.append([round(now, 1), round(rss / 1024, 3), round(pss / 1024, 3), n, k])
                last = now
            stop.wait(0.5)

    reader = threading.Thread(target=read_err, daemon=True)
    sampler = threading.Thread(target=sample, daemon=True)
    reader.start()
    sampler.start()
    stopped = False
    try:
        proc.wait(timeout=time_limit or None)
    except subprocess.TimeoutExpired:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stopped = True
    stop.set()
    sampler.join()
    out = proc.stdout.read()
    reader.join(timeout=5)
    for q in _ray_tagged(tag):  # a stopped route's Ray session
        try:
            os.kill(q, 9)
        except OSError:
            pass
    shutil.rmtree(tag, ignore_errors=True)
    gib = {
        k: {
            "peak_rss_gib": v[0] / 1024,
            "peak_pss_gib": v[1] / 1024,
            "processes_at_peak": v[2],
            "rss_mib_at_peak": {f"{n} [{i}]": round(r, 1) for i, (n, r, _) in enumerate(at_peak[k])},
        }
        for k, v in peaks.items()
    }
    res = {
        "seconds": time.perf_counter() - t,
        "peak_rss_gib": max(v[0] for v in peaks.values()) / 1024,
        "peak_pss_gib": max(v[1] for v in peaks.values()) / 1024,
        "phases": gib,
        "inference_blocks_done": done(),
        "inference_blocks_total": blocks_total,
        "complete": not stopped,
        "timeline_s_rss_pss_procs_blocks": timeline,
        "command": " ".join(full),
        "counted": "job process tree + every process whose command line names the route's own RAY_TMPDIR",
    }
    if stopped:
        return res
    if proc.returncode:
        raise RuntimeError(f"{' '.join(full)} failed:\n{out[-2000:]}\n{''.join(err_tail)[-3000:]}")
    summary = json.loads(out.strip().splitlines()[-1])
    return {**res, "lines": summary["lines"], "total_length_km": summary["total_length_m"] / 1000}


def _memory_main(args) -> int:
    import shutil
    import tempfile

    import torch

    from engine.geophys.card import LineamentCard
    from engine.geophys.model import build_model, save_checkpoint

    work = Path(args.work or tempfile.mkdtemp(prefix="lode-bench-lineaments-"))
    work.mkdir(parents=True, exist_ok=True)
    grid = work / f"survey_{args.memory_size}.tif"
    t = time.perf_counter()
    if args.reuse_grid and grid.is_file():
        info = {"size": args.memory_size, "reused": str(grid)}
    else:
        info = _mosaic_grid(args.memory_size, args.memory_tile, grid, args.seed)
    result: dict = {"memory": {"grid": info, "synth_s": time.perf_counter() - t}}
    result["memory"]["time_limit_s"] = args.time_limit or None
    if not args.skip_unet:
        model = args.model
        if model is None:
            torch.manual_seed(0)
            card = LineamentCard(trained={"weights": "random (memory measurement)"})
            model = str(save_checkpoint(work / "random_vgg16_unet.pt", build_model(card), card))
        extra = ["--stride", str(args.stride)] if args.stride else []
        extra += ["--block", str(args.block), "--executor", args.executor]
        blocks = (-(-args.memory_size // args.block)) ** 2
        status = work / "unet" / "_inference" / "_status" / "axis_probability"
        shutil.rmtree(work / "unet", ignore_errors=True)  # never resume an earlier (partial) run
        route = _measure_route(
            [str(grid), "--model", model, "--out", str(work / "unet"), *extra],
            args.nice,
            args.time_limit,
            status,
            blocks,
        )
        route["stride"] = args.stride or "default (window / 2)"
        route["block"] = args.block
        if route["complete"]:
            import zarr

            prob = zarr.open_array(str(work / "unet" / "axis_probability.zarr" / "axis_probability"), mode="r")[:]
            route["mask_fraction"] = float(np.nanmean(prob >= 0.5))
        route["model"] = model
        result["memory"]["unet"] = route
    if not args.skip_classical:
        result["memory"]["classical"] = _measure_route(
            [str(grid), "--method", "classical", "--out", str(work / "classical")], args.nice, args.time_limit
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
