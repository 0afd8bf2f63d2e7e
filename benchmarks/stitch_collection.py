"""Collection memory: ``lode stitch`` on collections of 1, 4 and 12 synthetic sections (3×3 frames of
1000×700), each run as ``python -m jobs.stitch`` in its own process with its own Ray session.

Reports wall time and the peak of the RSS summed over the job's process tree and every process of its
Ray session (sampled every 0.5 s), and the ratio rss(12)/rss(1) (acceptance: ≤ 1.25).

``python -m benchmarks.stitch_collection --json OUT``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

COUNTS = (1, 4, 12)
FRAME_HW = (700, 1000)
TARGET_RATIO = 1.25


def write_collection(root: Path, sections: int, grid: int = 3) -> Path:
    """``sections`` synthetic sections of ``grid``×``grid`` frames (fixed seeds), no calibration."""
    from engine.synth.captures import CaptureConfig, capture_grid, write_section

    for s in range(sections):
        cfg = CaptureConfig(rows=grid, cols=grid, frame_hw=FRAME_HW, seed=100 + s)
        write_section(root, f"s{s:02d}", capture_grid(None, cfg))
    return root


def machine_cpu() -> tuple[float, float]:
    """Seconds of CPU this machine has spent busy (user, nice, system, interrupts) and stolen by its host
    since boot (``/proc/stat``); ``(nan, nan)`` where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return float("nan"), float("nan")
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / hz, steal / hz


def run_measured(argv: list[str]) -> dict:
    """Run ``python -m <argv>`` in its own process with its own Ray session: its wall time, the peak of
    the RSS and PSS (GiB) summed over its process tree and every process of its Ray session (sampled every
    0.5 s), the machine's busy and stolen CPU seconds meanwhile (the sampling's own included; nothing else
    should run), and its standard output. Raises with the end of its stderr when it fails."""
    from benchmarks.lineaments import _ray_tagged, _route_memory

    tag = tempfile.mkdtemp(prefix="lbs")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_TMPDIR": tag, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_AUTH_MODE": "disabled"}
    t, (cpu0, steal0) = time.perf_counter(), machine_cpu()
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    peak = [0.0, 0.0, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            each = _route_memory(proc.pid, tag)
            rss, pss, n = sum(e[1] for e in each), sum(e[2] for e in each), len(each)
            if rss > peak[0]:
                peak[0], peak[2] = rss, n
            peak[1] = max(peak[1], pss)
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds, (cpu1, steal1) = time.perf_counter() - t, machine_cpu()
    stop.set()
    sampler.join()
    for q in _ray_tagged(tag):  # what is left of the job's own Ray session
        try:
            os.kill(q, 9)
        except OSError:
            pass
    shutil.rmtree(tag, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:1])} failed ({proc.returncode}): {err[-3000:]}")
    return {
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu1 - cpu0, 1),
        "steal_s": round(steal1 - steal0, 1),
        "peak_rss_gib": round(peak[0] / 1024, 4),
        "peak_pss_gib": round(peak[1] / 1024, 4),
        "processes_at_peak": peak[2],
        "stdout": out,
    }


def measure(collection: Path, store: Path, extra: list[str]) -> dict:
    """Run one stitch job; its wall time and peak summed RSS/PSS (GiB) with its Ray session."""
    run = run_measured(["jobs.stitch", str(collection), "--out", str(store), "--shard", "1024", *extra])
    run.pop("stdout")
    summary = json.loads(Path(str(store) + ".stitch.json").read_text())
    return {
        **run,
        "sections_in_flight": summary["sections_in_flight"],
        "frames_placed": sum(r["frames_placed"] for r in summary["sections"].values()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--counts", type=int, nargs="+", default=list(COUNTS))
    ap.add_argument("--sections-in-flight", type=int, help="passed to lode stitch (default: the job's)")
    args = ap.parse_args(argv)
    extra = [] if args.sections_in_flight is None else ["--sections-in-flight", str(args.sections_in_flight)]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="lode-bench-stitch-coll-") as tmp:
        for n in args.counts:
            coll = write_collection(Path(tmp) / f"c{n}", n)
            runs[str(n)] = measure(coll, Path(tmp) / f"c{n}.zarr", extra)
            print(f"{n} sections: {runs[str(n)]}", flush=True)
    lo, hi = str(min(args.counts)), str(max(args.counts))
    ratio = runs[hi]["peak_rss_gib"] / runs[lo]["peak_rss_gib"]
    result = {
        "benchmark": "stitch_collection",
        "frames": {"grid": "3x3", "frame_hw": list(FRAME_HW)},
        "cpus": os.cpu_count(),
        "runs": runs,
        "rss_ratio": round(ratio, 4),
        "acceptance": {"rss_ratio_max": TARGET_RATIO, "met": ratio <= TARGET_RATIO},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
