"""Stitching benchmark: Lode against ``cv2.Stitcher`` (SCANS) on one synthetic 5×5 grid with exact truth.

``python -m benchmarks.stitch --json OUT`` generates a section (default 5×5 frames of
3000×2000 at 25 % overlap, ≈12000×8000) twice, clean and degraded (distortion,
vignetting, exposure/white-balance drift, noise, JPEG) with calibration frames, then
runs, each in a fresh process sampled for peak RSS (whole process tree, Ray workers
included):

- ``lode_clean``: ``lode stitch`` on the clean frames;
- ``lode_degraded``: ``lode stitch`` fitting lens and flat field from its own calibration frames;
- ``lode_no_lens``: the degraded frames without lens correction (residuals must show it);
- ``opencv_scans``: ``cv2.Stitcher`` in SCANS mode on the raw degraded frames.

Scores: wall time, peak RSS, frames kept, RMS (px) of a 12×12 grid of raw pixels per
frame mapped through estimated and true lens + transform after removing the global
similarity, output size against the truth extent, mean ΔE2000 away from seams and
seam/interior gradient ratio (Lode).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _measured(cmd: list[str], timeout: float) -> dict:
    """Run ``cmd``; wall time, CPU time of reaped descendants (not Ray workers), exit code, peak RSS of its tree,
    and the last stdout line as JSON if any."""
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")},
    )
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(0.25)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    done.set()
    th.join()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res = {
        "wall_s": round(time.perf_counter() - t, 2),
        "cpu_s_reaped": round(cpu, 1),
        "peak_rss_gib": round(peak[0] / 2**30, 3),
        "returncode": proc.returncode,
    }
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
    if lines:
        res["child"] = json.loads(lines[-1])
    if proc.returncode:
        res["stderr_tail"] = err[-2000:]
    return res


def generate(work: Path, rows: int, cols: int, hw: tuple[int, int], seed: int) -> dict:
    from engine.synth.captures import (
        CaptureConfig,
        calibration_frames,
        capture_grid,
        textured_section,
        write_calibration,
        write_section,
    )

    base = dict(rows=rows, cols=cols, frame_hw=hw, overlap=0.25, seed=seed, jitter_px=6.0)
    clean = CaptureConfig(**base)
    degraded = CaptureConfig.degraded(**base)
    src = textured_section(clean.source_hw, seed=seed + 1, grain_px=max(40.0, hw[1] / 25))
    np.save(work / "source.npy", src)
    out = {}
    for name, cfg in (("clean", clean), ("degraded", degraded)):
        caps = capture_grid(src, cfg)
        write_section(work / name, "section", caps)
        if name == "degraded":
            write_calibration(work / name, calibration_frames(cfg))
        out[name] = caps.truth_dict()
    return out


def _opencv_child(tiles: str) -> None:
    """``cv2.Stitcher`` (SCANS) on the images of folder ``tiles``; prints its result as one JSON line."""
    import cv2

    from engine.io.images import list_images, read_rgb

    paths = list_images(Path(tiles))
    imgs = [read_rgb(p)[..., ::-1].copy() for p in paths]
    st = cv2.Stitcher_create(cv2.Stitcher_SCANS)
    t = time.perf_counter()
    status, pano = st.stitch(imgs)
    wall = time.perf_counter() - t
    res: dict = {
        "status": int(status),
        "status_ok": status == cv2.Stitcher_OK,
        "stitch_s": round(wall, 2),
        "frames": len(imgs),
    }
    if status == cv2.Stitcher_OK:
        kept = [int(k) for k in np.asarray(st.component()).ravel()]
        res.update(kept=kept, frames_kept=len(kept), panorama_hw=list(pano.shape[:2]))
        warper = cv2.PyRotationWarper("affine", 1.0)  # cameras stay at the registration (work) scale
        h, w = imgs[0].shape[:2]
        xs, ys = np.linspace(0.05 * w, 0.95 * w, 12), np.linspace(0.05 * h, 0.95 * h, 12)
        grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2) * st.workScale()
        mapped = {}
        for k, cam in zip(kept, st.cameras()):
            K = cam.K().astype(np.float32)
            R = np.asarray(cam.R, np.float32)
            mapped[paths[k].stem] = [list(warper.warpPoint((float(x), float(y)), K, R)) for x, y in grid]
        res["mapped_grid"] = mapped
    print(json.dumps(res))


def _score_lode(work: Path, case: str, truth: dict, src: np.ndarray) -> dict:
    import zarr

    from engine.calibrate.lens import LensModel
    from engine.io.layout import FULL_RESOLUTION, SEAM_LABELS
    from engine.stitch.evaluate import (
        alignment_rms,
        gradient_ratio,
        noise_floor_delta_e,
        sample_delta_e,
        seam_masks,
        section_lens,
        truth_in_panorama,
    )

    store = work / f"{case}.zarr"
    summary = json.loads(Path(str(store) + ".stitch.json").read_text())
    rep = summary["sections"]["section"]
    if "error" in rep:
        return {"error": rep["error"]}
    hw = tuple(truth["frame_hw"])
    checkerboard = LensModel.from_dict(summary["calibration"]["lens"]) if summary["calibration"]["lens"] else None
    lens = section_lens(rep, checkerboard)
    true_lens = LensModel.from_dict(
        {
            "camera_matrix": [
                [truth["lens"]["fx"], 0, truth["lens"]["cx"]],
                [0, truth["lens"]["fy"], truth["lens"]["cy"]],
                [0, 0, 1],
            ],
            "dist_coeffs": truth["lens"]["dist"],
            "frame_hw": hw,
        }
    )
    names = [f["file"].rsplit(".", 1)[0] for f in rep["frames"]]
    est = [np.array(f["transform"]) if f["placed"] else None for f in rep["frames"]]
    tt = [None if truth["transforms"][n] is None else np.array(truth["transforms"][n]) for n in names]
    rms, G = alignment_rms(est, lens, tt, true_lens, hw)
    eh, ew = truth["extent_hw"]
    out = {
        "frames_kept": rep["frames_placed"],
        "frames_total": rep["frames_total"],
        "rms_px": round(rms, 4),
        "report_rms_px": rep["rms_px"],
        "report_max_edge_rms_px": rep["max_edge_rms_px"],
        "flagged": rep["flagged"],
        "panorama_hw": rep["panorama_hw"],
        "truth_extent_hw": [eh, ew],
        "size_error_pct": round(
            100 * max(abs(rep["panorama_hw"][0] - eh) / eh, abs(rep["panorama_hw"][1] - ew) / ew), 3
        ),
        "stitch_timings_s": rep["timings_s"],
        "job_s": summary["seconds"],
    }
    if case != "lode_no_lens":
        g = zarr.open_group(str(store))["section"]
        pano = np.asarray(g[FULL_RESOLUTION][...]).transpose(1, 2, 0)
        on_seam, away = seam_masks(np.asarray(g[SEAM_LABELS][...]), rep["seam_labels"]["scale"], pano.shape[:2], 16)
        out["delta_e2000_away_from_seams"] = round(sample_delta_e(pano, src, G, away), 3)
        sigma = float(truth["config"]["noise_sigma"])
        out["delta_e2000_sensor_noise_alone"] = round(noise_floor_delta_e(src, G, away, sigma), 3) if sigma else 0.0
        out["seam_gradient_ratio"] = round(gradient_ratio(pano, on_seam, away), 3)
        out["truth_gradient_ratio_same_pixels"] = round(
            gradient_ratio(truth_in_panorama(src, G, pano.shape[:2]), on_seam, away), 3
        )
    return out


def _score_opencv(child: dict, truth: dict) -> dict:
    from engine.calibrate.lens import LensModel, ideal_points
    from engine.stitch.evaluate import umeyama_similarity
    from engine.stitch.register import apply

    out = {k: child.get(k) for k in ("status", "status_ok", "frames_kept", "frames", "panorama_hw", "stitch_s")}
    if not child.get("mapped_grid"):
        return out
    hw = truth["frame_hw"]
    true_lens = LensModel.from_dict(
        {
            "camera_matrix": [
                [truth["lens"]["fx"], 0, truth["lens"]["cx"]],
                [0, truth["lens"]["fy"], truth["lens"]["cy"]],
                [0, 0, 1],
            ],
            "dist_coeffs": truth["lens"]["dist"],
            "frame_hw": hw,
        }
    )
    h, w = hw
    xs, ys = np.linspace(0.05 * w, 0.95 * w, 12), np.linspace(0.05 * h, 0.95 * h, 12)
    t_ideal = ideal_points(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2), true_lens)
    P, Q = [], []
    for name, pts in child["mapped_grid"].items():
        if truth["transforms"].get(name) is not None:
            P.append(np.array(pts))
            Q.append(apply(np.array(truth["transforms"][name]), t_ideal))
    P, Q = np.concatenate(P), np.concatenate(Q)
    G = umeyama_similarity(P, Q)
    out["rms_px"] = round(float(np.sqrt(np.mean(np.sum((apply(G, P) - Q) ** 2, axis=1)))), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="write results here")
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--cols", type=int, default=5)
    ap.add_argument("--frame", default="3000x2000", help="frame width×height")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work", default=None, help="scratch folder (default: beside the JSON, removed after)")
    ap.add_argument("--reuse", action="store_true", help="reuse frames already generated in --work (same settings)")
    ap.add_argument("--cases", default="lode_degraded,lode_clean,opencv_scans,lode_no_lens")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--_child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        _opencv_child(args._child[1])  # ["opencv", TILES]
        return 0
    w, h = (int(v) for v in args.frame.lower().split("x"))
    work = Path(args.work) if args.work else Path(args.json).resolve().parent / "stitch_bench_work"
    t = time.perf_counter()
    if args.reuse and all((work / d / "section" / "truth.json").exists() for d in ("clean", "degraded")):
        truth = {d: json.loads((work / d / "section" / "truth.json").read_text()) for d in ("clean", "degraded")}
        for old in work.glob("lode_*.zarr*"):
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
    else:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        truth = generate(work, args.rows, args.cols, (h, w), args.seed)
    gen_s = time.perf_counter() - t
    src = np.load(work / "source.npy")
    results: dict = {
        "grid": [args.rows, args.cols],
        "frame_wh": [w, h],
        "overlap": 0.25,
        "generate_s": round(gen_s, 1),
        "cpus": os.cpu_count(),
        "note": "timings on a shared 2-core machine under nice: contended",
    }
    me = [sys.executable, "-m", "benchmarks.stitch", "--json", args.json, "--_child"]
    for case in args.cases.split(","):
        data = "clean" if case == "lode_clean" else "degraded"
        if case.startswith("lode"):
            lode = [sys.executable, "-m", "jobs.cli", "stitch", str(work / data), "--out", str(work / f"{case}.zarr")]
            run = _measured(lode + (["--no-lens"] if case == "lode_no_lens" else []), args.timeout)
            if run["returncode"] == 0:
                run.update(_score_lode(work, case, truth[data], src))
        else:
            run = _measured(me + ["opencv", str(work / data / "section" / "tiles")], args.timeout)
            if run.get("child"):
                run.update(_score_opencv(run["child"], truth[data]))
        if case.startswith("opencv"):
            run.pop("child", None)
        results[case] = run
        print(case, json.dumps({k: v for k, v in run.items() if k != "stderr_tail"}), flush=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    lc, oc = results.get("lode_degraded", {}), results.get("opencv_scans", {})
    if lc.get("wall_s") and oc.get("wall_s"):
        results["ratios_opencv_over_lode"] = {
            "wall": round(oc["wall_s"] / lc["wall_s"], 3),
            "peak_rss": round(oc["peak_rss_gib"] / max(lc["peak_rss_gib"], 1e-9), 3),
            "rms": None if not (oc.get("rms_px") and lc.get("rms_px")) else round(oc["rms_px"] / lc["rms_px"], 2),
        }
    Path(args.json).write_text(json.dumps(results, indent=1))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results.get("ratios_opencv_over_lode", {})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
