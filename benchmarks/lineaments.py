"""Lineament accuracy on held-out synthetic surveys: U-Net vs the classical baseline.

    python -m benchmarks.lineaments --json OUT --model CKPT [--n 20 --size 1024 --seed 100000]

Surveys use unseen seeds (training sets use SeedSequence([seed, i]) with small seeds; these use
plain integer seeds from --seed on), noise 0.5 nT, inclinations 30-90 degrees. Both methods
are scored by buffer precision/recall/F1 at 1 and 2 cells against the true axes, on the same
surveys in the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _cached_survey(seed: int, cfg, cache: str | None):
    from engine.geophys.synth import Survey, make_survey

    if cache is None:
        return make_survey(seed, cfg)
    path = Path(cache) / f"survey_{seed}_{cfg.shape[0]}x{cfg.shape[1]}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        axes = [z[f"axis_{i}"] for i in range(int(z["n_axes"]))]
        return Survey(z["anomaly"], float(z["spacing"]), float(z["inclination"]), float(z["declination"]), axes, z["target"])
    s = make_survey(seed, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, anomaly=s.anomaly, target=s.target, spacing=s.spacing_m, inclination=s.inclination, declination=s.declination,
             n_axes=len(s.axes), **{f"axis_{i}": a for i, a in enumerate(s.axes)})
    tmp.replace(path)
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
    args = p.parse_args(argv)

    import torch

    from engine.geophys.lineaments import ClassicalParams, VectorParams, classical_lineaments, unet_lineaments
    from engine.geophys.score import buffer_scores
    from engine.geophys.synth import SurveyConfig, make_survey

    cfg = SurveyConfig(shape=(args.size, args.size), noise_nt=args.noise, inclination_range=(30.0, 90.0), southern_fraction=0.0)
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
        row: dict = {"seed": seed, "inclination": round(s.inclination, 1), "declination": round(s.declination, 1), "true_km": sum(t.length for t in truth) / 1000}
        t1 = time.perf_counter()
        if not args.skip_classical:
            _, lines = classical_lineaments(da, params=ClassicalParams())
            for k in (1, 2):
                row[f"classical_{k}"] = buffer_scores([ln.line for ln in lines], truth, k * s.spacing_m)
        t2 = time.perf_counter()
        row["classical_s"] = t2 - t1
        if model is not None:
            vp = VectorParams(threshold=args.threshold if args.threshold is not None else float(card.get("threshold", 0.5)))
            _, lines = unet_lineaments(da, model, card, vp, stride=args.stride)
            t3 = time.perf_counter()
            for k in (1, 2):
                row[f"unet_{k}"] = buffer_scores([ln.line for ln in lines], truth, k * s.spacing_m)
            row["unet_s"] = t3 - t2
        row["synth_s"] = t1 - t0
        rows.append(row)
        print(json.dumps({k: (v if not isinstance(v, dict) else {a: round(b, 3) for a, b in v.items()}) for k, v in row.items()}), flush=True)
    summary: dict = {"n": args.n, "size": args.size, "noise_nt": args.noise, "seed0": args.seed, "model": args.model, "card": card}
    for method in ("classical", "unet"):
        for k in (1, 2):
            key = f"{method}_{k}"
            if key in rows[0]:
                summary[f"mean_{key}"] = {m: float(np.mean([r[key][m] for r in rows])) for m in ("precision", "recall", "f1")}
    if "mean_unet_2" in summary and "mean_classical_2" in summary:
        summary["unet_minus_classical_f1_2"] = summary["mean_unet_2"]["f1"] - summary["mean_classical_2"]["f1"]
    import resource

    summary["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "surveys": rows}, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
