"""Stitch every section of a collection into one OME-Zarr store (``lode stitch COLLECTION --out STORE``).

Each section becomes a multiscale image group ``<section_id>`` with its stitch report in
``attrs["lode"]["stitch"]``; all reports also go to ``<STORE>.stitch.json`` beside the store.
Sections are prepared (corrected, registered, seamed) as parallel Ray tasks, then the shards of
all of them render on the raster runner, which records each finished shard in
``.<STORE>.stitch-work`` beside the store: a killed run resumes at its unfinished shards. A section
appears in the store only once all its shards are written; the store's root group is created once,
before the sections fan out.

A section with a bad tile (truncated, corrupt, 16-bit, grey or RGBA; see ``engine.io.images.read_rgb``)
fails alone: the others are stitched, the manifest records each failure, and the job ends with one
line naming the first bad input (exit 2). Blank frames are flagged in the report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from jobs.contract import Job


def _pattern(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"pattern must look like 9x6, not {text!r}") from exc
    return a, b


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("collection", help="folder with <section_id>/tiles/* (+ positions.csv) and calibration/")
    parser.add_argument("--out", required=True, help="output OME-Zarr store (created or extended)")
    parser.add_argument("--sections", nargs="*", help="only these section ids")
    parser.add_argument("--lens", help="lens model JSON (default: calibration/lens.json or fit from checkerboard/)")
    parser.add_argument("--flat", help="flat field .npz (default: calibration/flat.npz or fit from flat/, dark/)")
    parser.add_argument("--no-lens", action="store_true", help="do not undistort")
    parser.add_argument("--no-flat", action="store_true", help="do not flat-field correct")
    parser.add_argument("--pattern", type=_pattern, default=(9, 6), help="checkerboard inner corners (default 9x6)")
    parser.add_argument("--shard", type=int, default=2048, help="output shard (= render block) size in pixels")
    parser.add_argument("--levels", type=int, default=3, help="pyramid levels")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the embedded Ray (ignored with RAY_ADDRESS)")


def report_path(store: str | Path) -> str:
    from engine.io import fs

    return fs.join(fs.parent(store), fs.name(store) + ".stitch.json")


def run(cfg: Any) -> int:
    import ray

    from engine.errors import LodeInputError, input_error_of, strip_ansi
    from engine.io import fs
    from engine.io.atomic import atomic_write_text
    from engine.io.manifest import manifest_path, write_job_manifest
    from engine.runtime import init_ray
    from engine.stitch.collection import load_correction, section_dirs
    from engine.stitch.section import StitchOptions, create_root, finish_section, prepare_section, render_sections

    t0 = time.perf_counter()
    secs = section_dirs(cfg.collection)
    if cfg.sections:
        unknown = sorted(set(cfg.sections) - {fs.name(s) for s in secs})
        if unknown:
            raise LodeInputError(cfg.collection, f"no section(s) {', '.join(unknown)}")
        secs = [s for s in secs if fs.name(s) in set(cfg.sections)]
    corr = load_correction(cfg.collection, cfg.lens, cfg.flat, cfg.pattern, not cfg.no_lens, not cfg.no_flat)
    opts = StitchOptions(shard=cfg.shard, levels=cfg.levels)
    init_ray(num_cpus=cfg.num_cpus)
    create_root(cfg.out)
    remote = ray.remote(num_cpus=0, **fs.ray_remote_args())(prepare_section)
    dirs = {fs.name(s): str(s) for s in secs}
    futures = {name: remote.remote(d, cfg.out, corr, opts) for name, d in dirs.items()}
    results: dict[str, dict] = {}
    errors: dict[str, LodeInputError] = {}
    prepared = {}
    for name, fut in futures.items():
        try:
            prepared[name] = ray.get(fut)
        except ray.exceptions.RayTaskError as exc:
            cause = input_error_of(exc)
            if cause is None:
                raise
            errors[name] = LodeInputError(cause.source, strip_ansi(cause.reason))
    t_render = time.perf_counter()
    run = render_sections([plan for plan, _ in prepared.values()])
    render_s = time.perf_counter() - t_render
    for key, reason in run.failed.items():
        name = key.split("/")[0]
        errors.setdefault(
            name, LodeInputError(fs.join(dirs[name], "tiles"), f"shard {key} failed: {strip_ansi(reason)}")
        )
    for name, (plan, report) in prepared.items():
        if name not in errors:
            results[name] = finish_section(plan, report, render_s)
    results = {name: results.get(name) or {"section": name, "error": str(errors[name])} for name in futures}
    summary = {
        "collection": _absolute(cfg.collection),
        "store": _absolute(cfg.out),
        "calibration": {"lens": None if corr.lens is None else corr.lens.to_dict(), "flat": corr.flat is not None},
        "seconds": round(time.perf_counter() - t0, 3),
        "sections": results,
        "render": {"shards": run.ran + run.skipped, "ran": run.ran, "skipped": run.skipped},
    }
    atomic_write_text(report_path(cfg.out), json.dumps(summary, indent=1))
    units = {
        name: (
            {"status": "failed", "reason": rep["error"]}
            if "error" in rep
            else {"status": "done", "frames_placed": rep["frames_placed"], "rms_px": rep["rms_px"]}
        )
        for name, rep in results.items()
    }
    error = _failure(errors, list(futures), manifest_path(cfg.out)) if errors else None
    write_job_manifest(
        cfg.out,
        "stitch",
        cfg.model_dump(),
        {"total_s": summary["seconds"]},
        "complete" if not errors else "partial" if len(errors) < len(futures) else "failed",
        units=units,
        error=None if error is None else str(error),
    )
    for name, rep in results.items():
        if "error" not in rep:
            print(
                f"{name}: {rep['frames_placed']}/{rep['frames_total']} frames, RMS {rep['rms_px']} px, "
                f"{rep['panorama_hw'][1]}×{rep['panorama_hw'][0]} px, flagged {', '.join(rep['flagged']) or 'none'}"
            )
    if error is not None:
        raise error
    return 0


def _failure(errors: dict, sections: list[str], manifest: str | None):
    """One error for the run, naming the first failed section's input; the others are in the manifest."""
    from engine.errors import LodeInputError

    first = next(name for name in sections if name in errors)
    return LodeInputError(
        errors[first].source,
        f"section {first} failed ({errors[first].reason}); "
        f"{len(errors) - 1} other section(s) failed, "
        f"{len(sections) - len(errors)} stitched: see {manifest}",
    )


def _absolute(path: str) -> str:
    from engine.io import fs

    return str(path) if fs.is_uri(path) else str(Path(path).resolve())


JOB = Job("stitch", add_arguments, run, description=__doc__, uri_fields=("collection", "out"), own_manifest=True)

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
