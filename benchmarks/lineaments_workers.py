"""The lineament U-Net trained with 1 and with 2 Ray Train workers under the same settings, scored on
the same held-out surveys (F1 at 1 and 2 cells).

    python -m benchmarks.lineaments_workers --json OUT [--work DIR] [--n-train 64 --epochs 5
        --steps 80 --batch 8 --seed 0] [--n 20 --size 1024]

Steps, in ``--work`` (each kept and reused when already there, so an interrupted run goes on):
``lode synth survey SET.zarr --n N_TRAIN --seed SEED`` (256² training surveys), then ``lode
lineaments train`` with ``--workers 1`` and ``--workers 2`` (same global batch, epochs, steps and
seed; two workers take half the batch each, from their own streams), then ``python -m
benchmarks.lineaments`` on ``--n`` held-out ``--size``² surveys for each checkpoint (unseen seeds
from 100000). The JSON has both runs' training histories and held-out scores and the difference
of their F1 at 2 cells.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str], log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}")
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True)
    p.add_argument("--work", help="working folder, reused when run again (default: a temporary one)")
    p.add_argument("--n-train", type=int, default=64, help="training surveys")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--steps", type=int, default=80, help="steps per epoch")
    p.add_argument("--batch", type=int, default=8, help="global batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=20, help="held-out surveys")
    p.add_argument("--size", type=int, default=1024, help="held-out survey size in cells")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="lode-bench-lineament-workers-"))
    work.mkdir(parents=True, exist_ok=True)
    lode = [sys.executable, "-m", "jobs.cli"]
    data = work / "set.zarr"
    if not data.exists():
        _run(
            [*lode, "synth", "survey", str(data), "--n", str(args.n_train), "--seed", str(args.seed)],
            work / "synth.log",
        )
    runs: dict = {}
    for workers in (1, 2):
        out = work / f"w{workers}"
        seconds = None
        if not (out / "model.pt").is_file():
            train = ["lineaments", "train", "--data", str(data), "--out", str(out), "--workers", str(workers)]
            train += ["--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps)]
            train += ["--batch-size", str(args.batch), "--seed", str(args.seed)]
            seconds = _run([*lode, *train], work / f"train_w{workers}.log")
        scores = work / f"heldout_w{workers}.json"
        if not scores.is_file():
            held = ["--json", str(scores), "--model", str(out / "model.pt"), "--skip-classical"]
            held += ["--n", str(args.n), "--size", str(args.size), "--cache", str(work / "surveys")]
            _run([sys.executable, "-m", "benchmarks.lineaments", *held], work / f"heldout_w{workers}.log")
        summary = json.loads(scores.read_text())["summary"]
        history = json.loads((out / "train_metrics.json").read_text())["history"]
        runs[f"workers_{workers}"] = {
            "train_seconds": seconds if seconds is not None else "reused",
            "train_history": history,
            "card": summary["card"],
            "unet_f1_1": summary["mean_unet_1"]["f1"],
            "unet_f1_2": summary["mean_unet_2"]["f1"],
            "unet_2": summary["mean_unet_2"],
        }
        print(json.dumps({"workers": workers, "f1_2": summary["mean_unet_2"]["f1"]}), flush=True)
    result = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "work")},
        **runs,
        "f1_2_difference": runs["workers_2"]["unet_f1_2"] - runs["workers_1"]["unet_f1_2"],
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("settings", "f1_2_difference")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
