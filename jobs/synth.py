"""Generate synthetic data with exact truth, the one place for each kind: LumenStone-layout
collections (``collection``, ``xpl``), whole sections (``panorama``), magnetic surveys of dyke
swarms (``survey``) and multi-source regions with planted deposits (``region``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jobs.common import setup_logging
from jobs.contract import Job


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    c = sub.add_parser("collection", help="LumenStone layout: imgs/ and masks/ with train/ and test/")
    c.add_argument("out")
    c.add_argument("--train", type=int, default=8)
    c.add_argument("--test", type=int, default=2)
    c.add_argument("--size", type=int, nargs=2, default=(768, 1024), metavar=("H", "W"))
    c.add_argument("--associations", nargs="+", default=["S1", "S2"], help="S1, S2, S3, paper")
    c.add_argument("--grain", type=float, default=60.0, help="mean grain diameter in px")
    c.add_argument("--seed", type=int, default=0)
    x = sub.add_parser("xpl", help="S3-like LumenStone layout with crossed-polar stacks (xpl/{split}/<stem>/)")
    x.add_argument("out")
    x.add_argument("--train", type=int, default=8)
    x.add_argument("--test", type=int, default=2)
    x.add_argument("--size", type=int, nargs=2, default=(512, 683), metavar=("H", "W"))
    x.add_argument("--angles", type=float, nargs="+", default=[0, 15, 30, 45, 60, 75], help="stage angles (deg)")
    x.add_argument("--seed", type=int, default=0)
    q = sub.add_parser("panorama", help="a whole section as an OME-Zarr image with truth labels")
    q.add_argument("out", help="zarr store (created or extended)")
    q.add_argument("--section", default="section-001")
    q.add_argument("--size", type=int, nargs=2, default=(8000, 12000), metavar=("H", "W"))
    q.add_argument("--association", default="S1")
    q.add_argument("--grain", type=float, default=60.0)
    q.add_argument("--block", type=int, default=1024, help="shard edge of the written pyramid")
    q.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("survey", help="synthetic magnetic surveys of dyke swarms with their axes as truth")
    v.add_argument("out", help="zarr training set (default) or, with --files, a folder of netCDF grids")
    v.add_argument("--n", type=int, default=500, help="number of surveys")
    v.add_argument(
        "--size", type=int, default=None, help="cells per side (default 256 for a training set, 1024 for --files)"
    )
    v.add_argument("--spacing", type=float, default=50.0, help="cell size in metres")
    v.add_argument("--noise", type=float, default=0.5, help="noise in nT")
    v.add_argument(
        "--files",
        action="store_true",
        help="held-out style netCDF grids + truth GeoJSON instead of a zarr training set",
    )
    v.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("region", help="multi-source geoscience grids with planted deposits (prospectivity)")
    r.add_argument("out", help="output folder (layers, faults.geojson, deposits.csv, layers.json)")
    r.add_argument("--size", type=int, default=512, help="cells per side")
    r.add_argument(
        "--points",
        type=float,
        default=None,
        metavar="PER_CELL",
        help="also sample the geochemistry as points, PER_CELL samples per cell (samples.csv, points.json)",
    )
    r.add_argument("--point-noise", type=float, default=0.05, help="log10 noise of a point sample")
    r.add_argument("--seed", type=int, default=0)


def run(cfg: Any) -> int:
    setup_logging()
    from engine.io.ome import PyramidLayout
    from engine.synth import SectionSpec, write_lumenstone, write_panorama

    if cfg.what == "survey":
        from engine.geophys.dataset import generate_training_set, write_survey_files
        from engine.geophys.synth import SurveyConfig

        if cfg.files:
            paths = write_survey_files(Path(cfg.out), cfg.n, cfg.size or 1024, cfg.spacing, cfg.noise, cfg.seed)
            print(f"surveys: {len(paths)} files in {cfg.out}")
        else:
            size = cfg.size or SurveyConfig().shape[0]
            survey = SurveyConfig(shape=(size, size), spacing_m=cfg.spacing, noise_nt=cfg.noise)
            print(f"training set: {generate_training_set(cfg.out, cfg.n, survey, seed=cfg.seed)}")
    elif cfg.what == "region":
        from engine.prospect.synth import sample_points, synth_region, write_region

        region = synth_region(cfg.size, cfg.seed)
        points = None if cfg.points is None else sample_points(region, cfg.points, cfg.point_noise, cfg.seed)
        print(f"region: {write_region(region, cfg.out, points)}")
    elif cfg.what == "xpl":
        from engine.synth.xpl import XplConfig, write_xpl_collection

        root = write_xpl_collection(
            cfg.out, cfg.train, cfg.test, tuple(cfg.size), cfg.seed, XplConfig(angles=tuple(cfg.angles))
        )
        print(f"collection: {root}")
    elif cfg.what == "collection":
        root = write_lumenstone(cfg.out, cfg.train, cfg.test, tuple(cfg.size), cfg.associations, cfg.seed, cfg.grain)
        print(f"collection: {root}")
    else:
        spec = SectionSpec(seed=cfg.seed, association=cfg.association, grain_diameter=cfg.grain)
        write_panorama(
            cfg.out,
            cfg.section,
            cfg.size[0],
            cfg.size[1],
            spec,
            PyramidLayout((cfg.block, cfg.block), 512, 3),
            progress=True,
        )
        print(f"panorama: {cfg.out}/{cfg.section}")
    return 0


JOB = Job("synth", add_arguments, run, description=__doc__)

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
