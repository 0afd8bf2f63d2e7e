"""Segmentation throughput: the Lode engine against the bare model and MONAI, side by side.

    python -m benchmarks.segment_throughput --json OUT [--size HxW] [--classes N]

On one synthetic panorama and one model (PSPNet-ResNet18 by default, random weights:
throughput does not depend on them), measures in one run:

- ``engine_mpx_s``: the whole Lode job (read blocks, segment, blend, write the OME-Zarr store),
  unique panorama megapixels per second, with Ray (and Ray Data's per-cluster actors) already
  started; the segmentation actors start inside the timed job;
- ``bare_model_mpx_s``: the model alone (eager, as rebuilt from the checkpoint) over the same
  global windows, pre-batched in memory;
- ``bare_program_mpx_s``: the same, run the way the engine's CPU actors run it (the checkpoint's
  traced program, channels-last, frozen), so ``engine_vs_bare_program`` is the engine's own
  overhead and ``engine_vs_bare`` what a user gains over running the model by hand;
- ``monai_mpx_s``: MONAI ``sliding_window_inference`` (gaussian) over the whole image in memory;
- ``max_abs_prob_diff_vs_monai``: engine probabilities (a second engine run storing float32
  probabilities) against MONAI's;
- peak memory of the engine (all Ray processes: sum of RSS and of PSS over the process tree,
  from a second engine run: polling every process costs CPU, so the timed run does not) and
  of MONAI (its process's peak RSS). Each part runs in its own subprocess so peaks do not mix;
- ``checkpoint_check_s``: the whole-checkpoint check every job runs before Ray starts (once per
  checkpoint file, then cached), taken before the timed runs and reported on its own.

The engine and the bare runs are timed ``--repeats`` times each (default 2), interleaved A B B A, and
reported as means with each run's seconds beside them (``engine_runs_s``, ...) and the ratio per repeat.

``--engine-only`` (12000×8000): the engine, its memory and ``engine_vs_bare_program``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def process_memory(procs) -> list[tuple[str, float, float]]:
    """``(name, RSS, PSS)`` in MiB of each of ``procs`` (psutil processes; those gone are skipped).
    The name is the process title (Ray's workers title themselves ``ray::<actor or task>``)."""
    import psutil

    out = []
    for p in procs:
        try:
            info = p.memory_full_info()
            name = _title(p.cmdline()) or p.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out.append((name, info.rss / 2**20, getattr(info, "pss", info.rss) / 2**20))
    return out


def _title(args: list[str]) -> str:
    """``ray::<actor>`` for Ray's workers, the program (or a Python process's script or module) else."""
    if not args:
        return ""
    words = args[0].split()
    if words[0].startswith("ray::"):
        return words[0]
    rest = words[1:] + args[1:]
    if os.path.basename(words[0]).startswith("python"):
        if "-c" in rest:
            return "python -c"
        if "-m" in rest and rest.index("-m") + 1 < len(rest):
            return rest[rest.index("-m") + 1]
        script = next((a for a in rest if not a.startswith("-")), "")
        return "/".join(script.split("/")[-2:]) or "python"
    return os.path.basename(words[0])


def summed_memory(procs) -> tuple[float, float]:
    """Summed RSS and PSS (MiB) of ``procs`` (psutil processes; those gone are skipped)."""
    each = process_memory(procs)
    return sum(r for _, r, _ in each), sum(q for _, _, q in each)


def _tree(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


class PeakSampler:
    """Samples the memory of a process (default: this one) and all its descendants in a thread;
    ``at_peak`` holds each process's ``(name, RSS, PSS)`` (MiB) at the summed RSS peak."""

    def __init__(self, interval: float = 0.25, pid: int | None = None):
        self.interval = interval
        self.pid = pid or os.getpid()
        self.peak_rss = self.peak_pss = 0.0
        self.at_peak: list[tuple[str, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            each = process_memory(_tree(self.pid))
            rss, pss = sum(r for _, r, _ in each), sum(q for _, _, q in each)
            if rss > self.peak_rss:
                self.at_peak = sorted(each, key=lambda e: -e[1])
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self.interval)

    def breakdown(self) -> list[dict[str, float | str]]:
        """The processes at the RSS peak, largest first, as JSON rows."""
        return [{"process": n, "rss_mib": round(r, 1), "pss_mib": round(q, 1)} for n, r, q in self.at_peak]

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _setup(work: Path, h: int, w: int, classes: int, arch: str, encoder: str, window: int, overlap: float) -> None:
    import torch

    from engine.classes import LUMENSTONE, ClassSet
    from engine.io.ome import PyramidLayout
    from engine.nets import build
    from engine.segment.checkpoint import ModelCard, save_checkpoint
    from engine.synth import SectionSpec, write_panorama

    if classes > len(LUMENSTONE):
        raise SystemExit(f"--classes at most {len(LUMENSTONE)}")
    cs = ClassSet(LUMENSTONE.classes[:classes], name="bench")
    torch.manual_seed(0)
    model = build(arch, encoder=encoder, in_channels=3, classes=classes)
    save_checkpoint(
        work / "model.pt",
        model,
        ModelCard(arch=arch, encoder=encoder, classes=cs.to_dicts(), window=window, overlap=overlap),
    )
    write_panorama(work / "pano.zarr", "bench", h, w, SectionSpec(seed=7), PyramidLayout((1024, 1024), 512, 3))


def _load(work: Path):
    import zarr

    from engine.io.layout import FULL_RESOLUTION
    from engine.segment.checkpoint import load_checkpoint

    model, card = load_checkpoint(work / "model.pt")
    img = zarr.open_group(str(work / "pano.zarr"), mode="r")[f"bench/{FULL_RESOLUTION}"][:]
    return model, card, img


def _normalised(img: np.ndarray, card):
    import torch

    mean = torch.tensor(card.mean).view(-1, 1, 1)
    std = torch.tensor(card.std).view(-1, 1, 1)
    return (torch.from_numpy(img).float() / 255 - mean) / std


def part_bare(work: Path, batch: int, program: bool = False) -> dict:
    import torch

    from engine.raster.grid import WindowGrid
    from engine.segment.checkpoint import load_inference_model

    torch.set_num_threads(os.cpu_count() or 1)
    model, card, img = _load(work)
    fmt = torch.contiguous_format
    if program:
        model, _ = load_inference_model(work / "model.pt", card.window)
        fmt = torch.channels_last
    h, w = img.shape[1:]
    grid = WindowGrid(h, w, card.window, card.overlap)
    starts = [(y, x) for y in grid.ys for x in grid.xs]
    x = _normalised(img, card)
    batches = [
        torch.stack([x[:, y : y + card.window, xx : xx + card.window] for y, xx in starts[i : i + batch]]).contiguous(
            memory_format=fmt
        )
        for i in range(0, len(starts), batch)
    ]
    del x
    with torch.inference_mode():
        for _ in range(2):
            model(batches[0][:1])
        t = time.perf_counter()
        for b in batches:
            torch.softmax(model(b), 1)
        dt = time.perf_counter() - t
    key = "bare_program" if program else "bare_model"
    return {f"{key}_s": dt, f"{key}_mpx_s": h * w / 1e6 / dt, "windows": len(starts)}


def part_monai(work: Path, batch: int) -> dict:
    import resource

    import torch
    from monai.inferers import sliding_window_inference

    torch.set_num_threads(os.cpu_count() or 1)
    model, card, img = _load(work)
    h, w = img.shape[1:]
    x = _normalised(img, card)[None]
    with torch.inference_mode():
        model(x[:, :, : card.window, : card.window])
        t = time.perf_counter()
        probs = sliding_window_inference(
            x,
            (card.window, card.window),
            batch,
            lambda v: torch.softmax(model(v), 1),
            overlap=card.overlap,
            mode="gaussian",
        )[0].numpy()
        dt = time.perf_counter() - t
    np.save(work / "monai_probs.npy", probs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"monai_s": dt, "monai_mpx_s": h * w / 1e6 / dt, "monai_peak_rss_mb": peak}


def part_engine(work: Path, batch: int, probabilities: str, out_name: str, sample: bool) -> dict:
    """One engine run; ``sample`` polls the memory of every Ray process (which costs CPU time,
    so timed runs do not sample and the memory figures come from a run of their own)."""
    import contextlib

    import ray

    from engine.runtime import init_ray
    from engine.segment.pipeline import SegmentOptions, run_segmentation

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    with PeakSampler() if sample else contextlib.nullcontext() as mem:
        init_ray()
        # Ray Data's own per-cluster actors start on first use; a running cluster has them already.
        ray.data.range(2).map_batches(lambda b: b).materialize()
        cfg = SegmentOptions(
            inputs=[str(work / "pano.zarr")],
            out=str(work / out_name),
            checkpoint=str(work / "model.pt"),
            batch_size=batch,
            probabilities=probabilities,
        )
        t = time.perf_counter()
        manifest = run_segmentation(cfg)
        dt = time.perf_counter() - t
        ray.shutdown()
    if sample:
        return {"engine_sampled_s": dt, "engine_peak_rss_mb": mem.peak_rss, "engine_peak_pss_mb": mem.peak_pss}
    import zarr

    from engine.io.layout import FULL_RESOLUTION

    arr = zarr.open_group(str(work / "pano.zarr"), mode="r")[f"bench/{FULL_RESOLUTION}"]
    h, w = arr.shape[1:]
    windows = sum(b.get("windows", 0) for b in manifest["blocks"])
    return {
        "engine_s": dt,
        "engine_mpx_s": h * w / 1e6 / dt,
        "engine_windows": windows,
        "blocks": len(manifest["blocks"]),
    }


def _run_part(part: str, work: Path, batch: int, extra: list[str] | None = None) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.segment_throughput",
        "--part",
        part,
        "--work",
        str(work),
        "--batch-size",
        str(batch),
        *(extra or []),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"part {part} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


_SECONDS = {"engine": "engine", "bare": "bare_model", "bare_program": "bare_program"}


def _interleaved(work: Path, batch: int, parts: list[str], repeats: int, mpx: float) -> dict:
    """The timed parts run ``repeats`` times, in turn forwards and backwards (A B, B A, ...), so that a
    machine whose speed drifts weighs on both sides alike. Seconds and rates are means over the
    repeats; each part's seconds per repeat are kept (``<key>_runs_s``)."""
    runs: dict[str, list[dict]] = {p: [] for p in parts}
    for r in range(repeats):
        for part in parts if r % 2 == 0 else parts[::-1]:
            fresh = ["--out-name", f"engine_out_{r}"] if part == "engine" else []
            runs[part].append(_run_part(part, work, batch, fresh))
    out: dict = {}
    for part, results in runs.items():
        key = _SECONDS[part]
        seconds = [r[f"{key}_s"] for r in results]
        out.update({k: v for k, v in results[0].items() if k not in (f"{key}_s", f"{key}_mpx_s")})
        out[f"{key}_s"] = float(np.mean(seconds))
        out[f"{key}_mpx_s"] = mpx / out[f"{key}_s"]
        out[f"{key}_runs_s"] = seconds
    out["repeats"] = repeats
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--size", default="4096x4096", help="HxW of the synthetic panorama")
    ap.add_argument("--classes", type=int, default=15)
    ap.add_argument("--arch", default="pspnet")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--engine-only",
        action="store_true",
        help="only the engine and its frozen program, bare (e.g. memory at 12000×8000)",
    )
    ap.add_argument(
        "--repeats", type=int, default=2, help="timed runs of the engine and the bare model each, interleaved"
    )
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--probabilities", default="none", help=argparse.SUPPRESS)
    ap.add_argument("--out-name", default="engine_out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.part:
        work = Path(args.work)
        fn = {
            "bare": lambda: part_bare(work, args.batch_size),
            "bare_program": lambda: part_bare(work, args.batch_size, program=True),
            "monai": lambda: part_monai(work, args.batch_size),
            "engine": lambda: part_engine(work, args.batch_size, args.probabilities, args.out_name, False),
            "engine_memory": lambda: part_engine(work, args.batch_size, "none", "memory", True),
        }[args.part]
        print(json.dumps(fn()))
        return 0

    h, w = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="lode-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        _setup(work, h, w, args.classes, args.arch, args.encoder, args.window, args.overlap)
        res: dict = {
            "benchmark": "segment_throughput",
            "size": [h, w],
            "classes": args.classes,
            "arch": args.arch,
            "encoder": args.encoder,
            "window": args.window,
            "overlap": args.overlap,
            "batch_size": args.batch_size,
            "setup_s": time.perf_counter() - t,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "device": _device()},
        }
        from engine.segment.card import check_checkpoint

        t = time.perf_counter()
        check_checkpoint(work / "model.pt")  # once per checkpoint file (cached), before every job's Ray
        res["checkpoint_check_s"] = time.perf_counter() - t
        timed = ["engine", "bare_program"] if args.engine_only else ["engine", "bare", "bare_program"]
        res.update(_interleaved(work, args.batch_size, timed, args.repeats, h * w / 1e6))
        res.update(_run_part("engine_memory", work, args.batch_size))
        if args.engine_only:
            res["engine_vs_bare_program"] = res["engine_mpx_s"] / res["bare_program_mpx_s"]
            res["engine_vs_bare_program_per_repeat"] = [
                b / e for e, b in zip(res["engine_runs_s"], res["bare_program_runs_s"], strict=True)
            ]
        else:
            res.update(_run_part("monai", work, args.batch_size))
            _run_part("engine", work, args.batch_size, ["--probabilities", "float32", "--out-name", "check"])
            import zarr

            from engine.io.layout import FULL_RESOLUTION, PROBABILITIES, STORE_NAME

            probs = zarr.open_group(str(work / "check" / STORE_NAME), mode="r")[
                f"bench/{PROBABILITIES}/{FULL_RESOLUTION}"
            ][:]
            monai = np.load(work / "monai_probs.npy", mmap_mode="r")
            res["max_abs_prob_diff_vs_monai"] = float(np.abs(probs - monai).max())
            mismatch = int((probs.argmax(0) != monai.argmax(0)).sum())
            res["argmax_identical_vs_monai"] = mismatch == 0
            res["argmax_mismatch_pixels"] = mismatch
            res["engine_vs_bare"] = res["engine_mpx_s"] / res["bare_model_mpx_s"]
            res["engine_vs_bare_per_repeat"] = [
                b / e for e, b in zip(res["engine_runs_s"], res["bare_model_runs_s"], strict=True)
            ]
            res["engine_vs_bare_program"] = res["engine_mpx_s"] / res["bare_program_mpx_s"]
            res["engine_vs_monai"] = res["engine_mpx_s"] / res["monai_mpx_s"]
            res["redundant_window_fraction"] = res["engine_windows"] / res["windows"] - 1
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86_64'})"


if __name__ == "__main__":
    sys.exit(main())
