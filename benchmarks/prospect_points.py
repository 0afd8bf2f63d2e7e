"""Prospectivity from point samples against the full grids, on synthetic regions with known deposits.

    python -m benchmarks.prospect_points --json OUT [--size 512 --regions 0 1 2 3 4 5
        --forests 3 --per-cell 0.25 --noise 0.05]

For each region seed: ``synth_region`` (100 deposits per 512² cells before spacing, 8 faults), its
five geochemical layers also sampled as points (``sample_points``: ``--per-cell`` samples per cell,
noise ``10 ** N(0, noise)``), two stacks (``layers.json``: the grids; ``points.json``: the samples
gridded by ``lode prospect stack``), and the isolation-forest map of each with ``--forests``
forest seeds. A map's AUC (all deposits) is the mean over the forest seeds, since one forest's AUC
moves with its seed alone; the JSON also keeps every single AUC and that spread.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def region_run(work: Path, size: int, seed: int, forests: int, per_cell: float, noise: float) -> dict:
    import pandas as pd

    from engine.prospect import evaluate as ev
    from engine.prospect.score import read_score, score_map
    from engine.prospect.select import make_scorer
    from engine.prospect.stack import build_stack
    from engine.prospect.synth import sample_points, synth_region, write_region

    t = time.perf_counter()
    region = synth_region(size, seed, deposit_density=100 / 512**2, fault_count=8)
    folder = write_region(region, work / f"region{seed}", sample_points(region, per_cell, noise, seed))
    dep = pd.read_csv(folder / "deposits.csv")
    auc: dict[str, list[float]] = {}
    for spec in ("layers", "points"):
        stack = build_stack(folder / f"{spec}.json", work / f"r{seed}_{spec}.zarr")
        auc[spec] = []
        for f in range(forests):
            score = read_score(
                score_map(stack, make_scorer("iforest", stack, seed=f), work / f"r{seed}_{spec}{f}.zarr")
            )
            auc[spec].append(float(ev.evaluate(score, dep["row"], dep["col"]).auc))
    layers, points = float(np.mean(auc["layers"])), float(np.mean(auc["points"]))
    return {
        "region_seed": seed,
        "deposits": len(dep),
        "auc_layers": layers,
        "auc_points": points,
        "difference": points - layers,
        "auc_layers_per_forest": auc["layers"],
        "auc_points_per_forest": auc["points"],
        "forest_spread_layers": max(auc["layers"]) - min(auc["layers"]),
        "seconds": time.perf_counter() - t,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True)
    p.add_argument("--size", type=int, default=512, help="region cells per side")
    p.add_argument("--regions", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5], help="region seeds")
    p.add_argument("--forests", type=int, default=3, help="isolation-forest seeds per map")
    p.add_argument("--per-cell", type=float, default=0.25, help="samples per cell")
    p.add_argument("--noise", type=float, default=0.05, help="log10 noise of a sample")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lode-bench-points-") as tmp:
        for seed in args.regions:
            rows.append(region_run(Path(tmp), args.size, seed, args.forests, args.per_cell, args.noise))
            r = rows[-1]
            print(
                f"region {seed}: {r['deposits']} deposits, AUC grids {r['auc_layers']:.3f} "
                f"points {r['auc_points']:.3f} ({r['difference']:+.3f})",
                flush=True,
            )
    diff = np.array([r["difference"] for r in rows])
    result = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "regions": rows,
        "mean_auc_layers": float(np.mean([r["auc_layers"] for r in rows])),
        "mean_auc_points": float(np.mean([r["auc_points"] for r in rows])),
        "max_abs_difference": float(np.abs(diff).max()),
        "mean_difference": float(diff.mean()),
        "within_0_03": int((np.abs(diff) <= 0.03).sum()),
        "max_forest_spread_layers": float(max(r["forest_spread_layers"] for r in rows)),
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "regions"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
