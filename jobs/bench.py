"""Run every benchmark module and write a Markdown report: headline figures, their ratio to
the peer they were measured against in the same run, and the machine.

    lode bench [--quick] [--only NAME ...] [--out bench_out] [--readme README.md]
    lode bench --report-only --out bench_out --readme README.md   (re-render from the JSON files)

Each benchmark runs as ``python -m benchmarks.<name> --json OUT/<name>.json``. ``--quick`` runs
each on small inputs (minutes on 2 cores, same code paths); the default runs the full sizes.
``--readme`` rewrites the part of the file between ``<!-- bench:begin -->`` and
``<!-- bench:end -->`` with the report.
"""

from __future__ import annotations

import argparse
import json
import os
import pkgutil
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.common import setup_logging
from jobs.contract import Job

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Headline:
    """A figure of a benchmark's JSON (dotted path; ``{key}`` takes a top-level string of the
    result) and, optionally, the peer it was measured against in the same run."""

    figure: str
    path: str
    peer: str | None = None
    peer_path: str | None = None


HEADLINES: dict[str, list[Headline]] = {
    "segment_throughput": [
        Headline("engine, whole job (Mpx/s)", "engine_mpx_s", "bare model", "bare_model_mpx_s"),
        Headline("engine, whole job (Mpx/s)", "engine_mpx_s", "MONAI sliding_window_inference", "monai_mpx_s"),
        Headline("max abs prob difference vs MONAI", "max_abs_prob_diff_vs_monai"),
        Headline("argmax mismatch pixels vs MONAI", "argmax_mismatch_pixels"),
        Headline("engine peak PSS (MiB)", "engine_peak_pss_mb", "MONAI peak RSS (MiB)", "monai_peak_rss_mb"),
    ],
    "stitch": [
        Headline(
            "RMS vs truth, degraded frames (px)", "lode_degraded.rms_px", "cv2.Stitcher SCANS", "opencv_scans.rms_px"
        ),
        Headline(
            "frames kept, degraded", "lode_degraded.frames_kept", "cv2.Stitcher SCANS", "opencv_scans.frames_kept"
        ),
        Headline("wall, degraded (s)", "lode_degraded.wall_s", "cv2.Stitcher SCANS", "opencv_scans.wall_s"),
        Headline("RMS vs truth, clean frames (px)", "lode_clean.rms_px"),
    ],
    "stitch_real": [
        Headline(
            "RMS vs truth, 5×5 degraded real textures (px)",
            "lode.5x5_degraded.rms_px",
            "ASHLAR 1.20",
            "ashlar.5x5_degraded.rms_px",
        ),
        Headline(
            "RMS vs truth, 4×4 degraded real textures (px)",
            "lode.4x4_degraded.rms_px",
            "ASHLAR 1.20",
            "ashlar.4x4_degraded.rms_px",
        ),
        Headline(
            "frames placed, 5×5 clean",
            "lode.5x5_clean.frames_placed",
            "cv2.Stitcher SCANS",
            "opencv_scans.5x5_clean.frames_kept",
        ),
        Headline("report RMS / true RMS, 4×4 degraded", "lode.4x4_degraded.report_over_true_rms"),
    ],
    "stitch_collection": [
        Headline("summed peak RSS, 12 sections (GiB)", "runs.12.peak_rss_gib", "1 section", "runs.1.peak_rss_gib"),
    ],
    "collection": [
        Headline(
            "lode run, summed peak RSS, many sections (GiB)",
            "lode_run.{many}.peak_rss_gib",
            "few sections",
            "lode_run.{few}.peak_rss_gib",
        ),
        Headline(
            "lode run, sections per hour",
            "sections_per_hour.lode_run",
            "stitch, segment, analyze one after another",
            "sections_per_hour.individual_jobs",
        ),
    ],
    "analyze_grains": [
        Headline("wall, Ray tasks (s)", "ray.wall_s", "serial", "serial.wall_s"),
        Headline("peak RSS, Ray tasks (GiB)", "ray.peak_rss_gib", "serial", "serial.peak_rss_gib"),
        Headline("grains", "ray.grains"),
    ],
    "lineaments": [
        Headline("F1 at 2 cells, U-Net", "summary.mean_unet_2.f1", "classical", "summary.mean_classical_2.f1"),
        Headline("F1 at 2 cells, classical", "summary.mean_classical_2.f1"),
    ],
    "lineaments_workers": [
        Headline("F1 at 2 cells, 2 Ray Train workers", "workers_2.unet_f1_2", "1 worker", "workers_1.unet_f1_2"),
        Headline("F1 at 2 cells, 2 workers minus 1", "f1_2_difference"),
    ],
    "prospect": [
        Headline(
            "AUC on held-out deposits, ViT MAE",
            "table.{model}.auc_mean",
            "best baseline ({best_baseline})",
            "table.{best_baseline}.auc_mean",
        ),
        Headline(
            "deposits in top 10 % of area, ViT MAE",
            "table.{model}.capture_top10_pooled",
            "best baseline ({best_baseline})",
            "table.{best_baseline}.capture_top10_pooled",
        ),
    ],
    "prospect_points": [
        Headline("AUC, map from gridded point samples", "mean_auc_points", "full grids", "mean_auc_layers"),
        Headline("AUC, points minus grids, largest |difference|", "max_abs_difference"),
    ],
    "sampler": [
        Headline("max/min class share, Lode", "lode.max_min_ratio", "petroscope 0.0.12", "petroscope.max_min_ratio"),
        Headline(
            "balancing quality, Lode", "lode.balancing_quality", "petroscope 0.0.12", "petroscope.balancing_quality"
        ),
        Headline("patches/s, Lode", "lode.patches_per_s", "petroscope 0.0.12", "petroscope.patches_per_s"),
        Headline("max/min class share, Lode", "lode.max_min_ratio", "uniform", "uniform.max_min_ratio"),
        Headline("map build peak RSS (GiB), 15-class mask", "maps_big.peak_rss_gib"),
    ],
    "sampler_ablation": [
        Headline(
            "IoU of the rarest class ({rarest_name}), balanced",
            "balanced.iou.{rarest_class}",
            "uniform",
            "uniform.iou.{rarest_class}",
        ),
        Headline("mIoU, balanced", "balanced.mean_iou", "uniform", "uniform.mean_iou"),
    ],
    "colour": [
        Headline(
            "held-out ΔE2000 after per-image fit",
            "held_out.mean_delta_e_after_ciede2000_fit",
            "least squares, linear RGB",
            "held_out.mean_delta_e_after_lstsq_linear_rgb",
        ),
        Headline("CIEDE2000 max error, Sharma pairs", "sharma.max_abs_error"),
        Headline("correction wall (s), median", "speed.wall_s_median"),
        Headline(
            "pixel accuracy on casts, corrected",
            "model.pixel_accuracy_cast_corrected",
            "uncast originals",
            "model.pixel_accuracy_uncast",
        ),
    ],
    "xpl": [
        Headline("rotation error max (deg)", "registration.sift_ransac_ecc.rotation_err_deg_max"),
        Headline("translation error max (px)", "registration.sift_ransac_ecc.translation_err_px_max"),
        Headline(
            "anisotropic IoU, PPL + 6 XPL",
            "models.ppl_xpl6.anisotropic_mean_iou",
            "PPL only",
            "models.ppl.anisotropic_mean_iou",
        ),
    ],
    "stitch_cpu_work": [
        Headline("CPU seconds of one degraded section, all stages", "core_seconds"),
        Headline("shortest wall on 2 cores (s)", "two_core_floor_s"),
        Headline("CPU seconds, registration", "cpu_s.register"),
        Headline("CPU seconds, render", "cpu_s.render"),
    ],
    "viewer": [
        Headline("first image (ms)", "first_image_ms", "store that fits the page", "small.first_image_ms"),
        Headline(
            "chunks read on a pan", "pan.chunks_read", "chunks in view, levels read", "pan.chunks_in_view_levels_read"
        ),
        Headline("store bytes read, first view", "store_bytes_read_first_view", "store size", "store.bytes"),
    ],
}

QUICK: dict[str, list[str]] = {
    "segment_throughput": ["--size", "1024x1024", "--window", "256", "--batch-size", "4"],
    "stitch": ["--rows", "2", "--cols", "3", "--frame", "600x400"],
    "stitch_collection": ["--counts", "1", "2"],
    "stitch_cpu_work": ["--rows", "2", "--cols", "3", "--frame", "600x400"],
    "collection": ["--counts", "1", "2", "--size", "900", "600"],
    "stitch_real": ["--frame", "480x360", "--tools", "lode,opencv"],
    "analyze_grains": ["--height", "2000", "--width", "1500"],
    "lineaments": ["--n", "2", "--size", "256"],
    "lineaments_workers": ["--n-train", "4", "--epochs", "1", "--steps", "2", "--n", "1", "--size", "256"],
    "prospect": ["--size", "256", "--seeds", "1", "--steps", "20"],
    "prospect_points": ["--size", "256", "--regions", "0", "--forests", "1"],
    "sampler": ["--patches", "1000", "--images", "4", "--size", "768", "1024", "--big", "2000", "3000"],
    "sampler_ablation": ["--steps", "40", "--train", "4", "--test", "2", "--size", "256", "320", "--patch", "64"],
    "colour": ["--trials", "4", "--size", "384", "512", "--skip-model"],
    "xpl": ["--stacks", "1", "--skip-model"],
    "viewer": ["--size", "2000x3000", "--repeats", "1"],
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench_out", help="folder for the JSON results and BENCHMARKS.md")
    p.add_argument("--only", nargs="+", help="benchmark module names to run (default: all)")
    p.add_argument("--quick", action="store_true", help="small inputs: the whole set in minutes on 2 cores")
    p.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="extra arguments for one benchmark, e.g. lineaments='--model model.pt'",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per benchmark")
    p.add_argument("--readme", default=None, help="rewrite the bench markers of this Markdown file with the report")
    p.add_argument("--report-only", action="store_true", help="render the report from the JSON files in --out")


def _fields(result: dict) -> dict[str, str]:
    """Top-level scalars of a result, as text, for ``{key}`` in headline paths and labels."""
    return {k: str(v) for k, v in result.items() if isinstance(v, (str, int)) and not isinstance(v, bool)}


def lookup(result: dict, path: str) -> float | None:
    try:
        path = path.format_map(_fields(result))
    except KeyError:
        return None
    node = result
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def rows(name: str, result: dict) -> list[list[str]]:
    out = []
    for h in HEADLINES.get(name, []):
        v = lookup(result, h.path)
        if v is None:
            continue
        peer_v = lookup(result, h.peer_path) if h.peer_path else None
        fields = _fields(result)
        peer = h.peer.format_map(fields) if h.peer else ""
        ratio = _fmt(v / peer_v) if peer_v else "—"
        out.append(
            [name, h.figure.format_map(fields), _fmt(v), peer if peer_v is not None else "", _fmt(peer_v), ratio]
        )
    if not out:
        flat = _flatten(result)
        out = [[name, k, _fmt(v), "", "—", "—"] for k, v in list(flat.items())[:12]]
    return out


def _flatten(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def machine() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    gpu = "no GPU"
    try:
        r = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if r.returncode == 0 and r.stdout.strip():
            gpu = "GPU " + "; ".join(r.stdout.strip().splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {gpu}; "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def markdown(results: dict[str, dict], meta: dict) -> str:
    runs = meta.get("runs", {})
    modes = sorted({runs[n]["mode"] for n in results if n in runs})
    lines = [
        f"Machine: {meta['machine']}  ",
        f"Mode: {', '.join(modes) or 'unknown'}; wall per benchmark: "
        + ", ".join(f"{n} {runs[n]['seconds']:.0f} s ({runs[n]['date']})" for n in results if n in runs)
        + "  ",
    ]
    if meta.get("failed"):
        lines.append(f"Failed: {', '.join(meta['failed'])}  ")
    lines += [
        "",
        "| benchmark | figure | value | peer (same run) | peer value | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, res in results.items():
        lines += ["| " + " | ".join(r) + " |" for r in rows(name, res)]
    return "\n".join(lines) + "\n"


def rewrite_readme(path: Path, report: str) -> None:
    from engine.io.atomic import atomic_write_text

    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no {BEGIN} ... {END} markers")
    atomic_write_text(path, pattern.sub(lambda _: f"{BEGIN}\n{report}{END}", text))


def _names(only: list[str] | None) -> list[str]:
    import benchmarks

    found = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))
    unknown = sorted(set(only or []) - set(found))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; have {found}")
    return only or found


def run(cfg: Any) -> int:
    setup_logging()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    names = _names(cfg.only)
    extra = {}
    for item in cfg.args:
        key, _, value = item.partition("=")
        extra[key] = shlex.split(value)
    meta_path = out / "bench_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"runs": {}}
    meta.setdefault("runs", {})
    if not cfg.report_only:
        meta.update(machine=machine(), failed=[])
        env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        for name in names:
            path = out / f"{name}.json"
            path.unlink(missing_ok=True)
            meta["runs"].pop(name, None)
            cmd = [
                sys.executable,
                "-m",
                f"benchmarks.{name}",
                "--json",
                str(path),
                *(QUICK.get(name, []) if cfg.quick else []),
                *extra.get(name, []),
            ]
            print(f"benchmark {name}: {shlex.join(cmd[1:])}", flush=True)
            t = time.perf_counter()
            try:
                rc = subprocess.run(cmd, timeout=cfg.timeout, env=env).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            seconds = time.perf_counter() - t
            if rc or not path.exists():
                meta["failed"].append(name)
                continue
            meta["runs"][name] = {
                "mode": "quick" if cfg.quick else "full",
                "seconds": seconds,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            }
            print(f"benchmark {name}: {seconds:.0f} s", flush=True)
        meta_path.write_text(json.dumps(meta, indent=1))
    meta.setdefault("machine", machine())
    results = {
        n: json.loads((out / f"{n}.json").read_text())
        for n in _names(None)
        if (out / f"{n}.json").exists() and (cfg.report_only or n in meta["runs"])
    }
    if cfg.only and cfg.report_only:
        results = {n: r for n, r in results.items() if n in cfg.only}
    report = markdown(results, meta)
    (out / "BENCHMARKS.md").write_text(report)
    if cfg.readme:
        rewrite_readme(Path(cfg.readme), report)
    print(report)
    print(f"wrote {out / 'BENCHMARKS.md'}" + (f"; failed: {meta['failed']}" if meta.get("failed") else ""))
    return 1 if meta.get("failed") else 0


JOB = Job("bench", add_arguments, run, description=__doc__, outputs={"readme": "file"})

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
