"""``lode analyze STORE``: grain table, statistics and report of a segmentation store.

Writes ``grains.parquet``, ``statistics.parquet``, ``quality.parquet``, ``report.html`` and the report's PNGs
into ``--out`` (default: the directory that contains the store). The grain pass runs block by
block on the raster runner and records each block in ``--out``/.grains-work (removed once the
tables are written): a killed run resumes at its first unfinished block.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from jobs.contract import Job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="segmentation store (OME-Zarr with labels/minerals per section)")
    parser.add_argument("--out", default=None, help="output directory (default: beside the store)")
    parser.add_argument(
        "--executor",
        choices=("ray", "serial"),
        default="ray",
        help="run blocks as Ray tasks (default) or serially in this process",
    )
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: start or join local)")
    parser.add_argument("--connectivity", type=int, choices=(4, 8), default=8, help="grain pixel connectivity")
    parser.add_argument(
        "--non-grain", default="0", help="comma-separated class codes not measured as grains (default: 0, non-ore)"
    )
    parser.add_argument("--densities", default=None, help="JSON {mineral name: g/cm3} overriding the defaults")
    parser.add_argument(
        "--size-classes", default=None, help="comma-separated increasing ECD class edges (default: √2 series in µm)"
    )
    parser.add_argument(
        "--pixel-size-um", type=float, default=None, help="pixel size when the store has none (or to override it)"
    )
    parser.add_argument("--block", type=int, default=None, help="block edge in pixels (default: the shard shape)")
    parser.add_argument(
        "--labels",
        default="minerals",
        help="label image to measure under each section's labels/ (default minerals; "
        "'truth' for synthetic ground truth)",
    )
    parser.add_argument("--no-report", action="store_true", help="write only the Parquet tables")
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="measure only the written blocks of sections a killed or failed run left incomplete",
    )


def _codes(text: str, what: str) -> list[float]:
    from engine.errors import LodeInputError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LodeInputError(what, f"expected comma-separated numbers, got {text!r}") from None


def run(cfg: Any) -> int:
    from engine.analyze.collection import analyze_store
    from jobs.common import setup_logging

    setup_logging(fmt="%(message)s")
    if cfg.executor == "ray":
        import os

        from engine.runtime import init_ray

        if cfg.ray_address:
            os.environ["RAY_ADDRESS"] = cfg.ray_address
        init_ray()
    res = analyze_store(
        cfg.store,
        cfg.out,
        executor=cfg.executor,
        connectivity=2 if cfg.connectivity == 8 else 1,
        non_grain=[int(v) for v in _codes(cfg.non_grain, "--non-grain")],
        densities=cfg.densities,
        size_edges=_codes(cfg.size_classes, "--size-classes") if cfg.size_classes else None,
        pixel_size_um=cfg.pixel_size_um,
        block=(cfg.block, cfg.block) if cfg.block else None,
        report=not cfg.no_report,
        label_name=cfg.labels,
        allow_incomplete=cfg.allow_incomplete,
    )
    from engine.export.sections import export_sections
    from engine.io import fs

    exports = export_sections(
        cfg.store, res.grains_path, fs.parent(str(res.grains_path)), label_name=cfg.labels, executor=cfg.executor
    )
    for section, n in res.incomplete.items():
        print(f"INCOMPLETE {section}: {n} block(s) never written are left out of these measurements")
    print(
        json.dumps(
            {
                "grains": str(res.grains_path),
                "statistics": str(res.statistics_path),
                "quality": str(res.quality_path),
                "incomplete_sections": res.incomplete,
                "exports": exports,
                "report": str(res.report_path) if res.report_path else None,
                "blocks": res.blocks,
                "timings_s": {k: round(v, 3) for k, v in res.timings.items()},
            },
            indent=2,
        )
    )
    return 0


JOB = Job("analyze", add_arguments, run, description=__doc__, uri_fields=("store", "out"))

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
