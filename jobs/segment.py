"""Segment panoramas (OME-Zarr) or image folders into mineral label images, block by block on Ray."""

from __future__ import annotations

import argparse
import json

from jobs.common import setup_logging
from jobs.contract import Job
from schemas.config import SegmentConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", help="OME-Zarr stores, image folders or image files")
    p.add_argument("--out", help="output directory (lode.ome.zarr, manifest.json)")
    p.add_argument("--checkpoint", "--model", dest="checkpoint", help="model checkpoint (.pt)")
    p.add_argument("--window", type=int, help="window size (default: model card)")
    p.add_argument("--overlap", type=float, help="window overlap 0..1 (default: model card)")
    p.add_argument("--batch-size", type=int, help="windows per forward pass (default 8)")
    p.add_argument("--block", type=int, nargs=2, metavar=("H", "W"), help="output block (= shard) size")
    p.add_argument(
        "--probabilities", choices=["none", "uint8", "float16", "float32"], help="also store class probabilities"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--num-actors", type=int, help="segmentation actors (default: one per GPU, else 1)")
    p.add_argument("--max-blocks", type=int, help="stop after this many blocks (resume later)")
    p.add_argument(
        "--colour",
        "--color",
        dest="colour",
        choices=["none", "per-image", "series", "annotated"],
        help="colour calibration stage before segmentation (default none; annotated: only sections with one)",
    )
    p.add_argument(
        "--annotations",
        help="folder of sparse annotation masks <section>.png for --colour (class codes, 255 = not annotated)",
    )
    p.add_argument("--ccm", help="saved colour matrices (ccm.json from lode calibrate colour) applied before the model")
    p.add_argument("--xpl", help="folder of <section>/ subfolders of crossed-polar captures (extra channels)")


def run(cfg: SegmentConfig) -> int:
    setup_logging()
    from engine.segment.pipeline import SegmentOptions, run_segmentation

    manifest = run_segmentation(SegmentOptions(**cfg.model_dump()))
    done = sum(b["status"] == "done" for b in manifest["blocks"])
    print(
        json.dumps(
            {
                "status": manifest["status"],
                "blocks_done": done,
                "blocks": len(manifest["blocks"]),
                "skipped_already_done": manifest["skipped_already_done"],
                "out": cfg.out,
                "timings": manifest["timings"],
            },
            indent=1,
        )
    )
    return 0


JOB = Job(
    "segment",
    add_arguments,
    run,
    description=__doc__,
    config=SegmentConfig,
    uri_fields=("inputs", "out", "checkpoint"),
    own_manifest=True,
)

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
