"""``lode evaluate --pred STORE --truth DIR``: per-class IoU, mean IoU, pixel accuracy and confusion
of a segmentation store against truth, summed over the whole dataset; prints a table, writes JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jobs.contract import Job


def default_outputs(args: argparse.Namespace) -> None:
    from engine.io import fs

    if not args.json_out and fs.is_uri(args.pred):
        args.json_out = fs.join(fs.parent(args.pred), "evaluation.json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", required=True, help="segmentation store (lode.ome.zarr: <section>/labels/minerals)")
    p.add_argument(
        "--truth",
        required=True,
        help="folder of masks named <section>.png (searched recursively) or a store with labels/truth",
    )
    p.add_argument("--classes", type=int, nargs="+", help="class codes scored (default: codes found)")
    p.add_argument(
        "--void-borders",
        type=int,
        default=0,
        metavar="PX",
        help="leave out a band this wide around truth class boundaries (default 0)",
    )
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="score only the written blocks of sections a killed or failed run left incomplete",
    )
    p.add_argument("--json", dest="json_out", help="JSON output (default: evaluation.json beside the store)")


def run(cfg: Any) -> int:
    from engine.analyze.evaluate import evaluate_store
    from engine.classes import LUMENSTONE_CATALOGUE
    from engine.io.atomic import atomic_write_text

    incomplete: dict[str, int] = {}
    total, per = evaluate_store(
        cfg.pred, cfg.truth, cfg.classes, cfg.void_borders, allow_incomplete=cfg.allow_incomplete, incomplete=incomplete
    )
    names = {c: m.name for c, m in LUMENSTONE_CATALOGUE.items()}
    for s, n in incomplete.items():
        print(f"INCOMPLETE {s}: {n} block(s) never written are left out of these scores")
    print(total.table(names))
    out = Path(cfg.json_out) if cfg.json_out else Path(cfg.pred).resolve().parent / "evaluation.json"
    doc = {
        "pred": str(cfg.pred),
        "truth": str(cfg.truth),
        "void_borders": cfg.void_borders,
        "incomplete_sections": incomplete,
        **total.to_dict(names),
        "sections": {s: v.to_dict(names) for s, v in per.items()},
    }
    atomic_write_text(out, json.dumps(doc, indent=1))
    print(f"written: {out}")
    return 0


JOB = Job(
    "evaluate", add_arguments, run, description=__doc__, outputs={"json_out": "file"}, default_outputs=default_outputs
)

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
