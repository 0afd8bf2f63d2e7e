"""The ``lode`` console script: one subcommand per job module.

Each job module ``jobs.<name>`` declares ``JOB``, a :class:`jobs.contract.Job`, and is also
runnable as ``python -m jobs.<name>`` (what ``ray job submit`` calls). Modules are imported only
when their subcommand runs, so ``lode <cmd> --help`` is fast and never needs Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.contract import Job

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("jobs.run", "a whole collection from raw captures: stitch, segment, measure and report, in one job"),
    "demo": ("jobs.demo", "generate a synthetic collection, train, segment and score it end to end"),
    "synth": (
        "jobs.synth",
        "synthetic data with exact truth: collections, panoramas, magnetic surveys, prospectivity regions",
    ),
    "segment": ("jobs.segment", "segment panoramas or image folders into mineral label images"),
    "train": ("jobs.train", "train a segmentation model with Ray Train"),
    "evaluate": ("jobs.evaluate", "score a segmentation store against truth masks: IoU table and JSON"),
    "analyze": ("jobs.analyze", "grain table, modal statistics and HTML report of a segmentation store"),
    "annotate": ("jobs.annotate", "annotation aids: expand scribbles to a label map, pick uncertain regions"),
    "prospect": (
        "jobs.prospect",
        "unsupervised mineral prospectivity: stack grids, train the ViT MAE, map and evaluate against deposits",
    ),
    "stitch": ("jobs.stitch", "stitch every section of a collection into an OME-Zarr panorama store"),
    "calibrate": (
        "jobs.calibrate",
        "fit capture calibration: lens (checkerboard), flat field (flat + dark) or colour matrix",
    ),
    "lineaments": (
        "jobs.lineaments",
        "magnetic anomaly lineaments: U-Net or classical axes of survey grids, evaluation, training",
    ),
    "view": ("jobs.view", "browse a section store or survey output in a local web page (127.0.0.1)"),
    "bench": ("jobs.bench", "run every benchmark and write a Markdown report"),
    "config": ("jobs.config", "print a job's config JSON Schema, or validate a config file"),
}


def load_job(name: str) -> Job:
    """The job declared by the module of subcommand ``name``."""
    from jobs.contract import Job

    job = importlib.import_module(SUBCOMMANDS[name][0]).JOB
    if not isinstance(job, Job) or job.name != name:
        raise TypeError(f"{SUBCOMMANDS[name][0]}.JOB is not the Job {name!r}")
    return job


def build_parser() -> argparse.ArgumentParser:
    """Top-level parser listing the subcommands (their own options are parsed by their modules)."""
    parser = argparse.ArgumentParser(prog="lode", description="Lode: measured geology from geoscience imagery.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in SUBCOMMANDS:
        build_parser().parse_args(argv or ["--help"])
        return 2
    from jobs.contract import parse, run_job

    job = load_job(argv[0])
    return run_job(job, parse(job, argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
