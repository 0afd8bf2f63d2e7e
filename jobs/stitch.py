"""Stitch every section of a collection into one OME-Zarr store (``lode stitch COLLECTION --out STORE``).

Each section becomes a multiscale image group ``<section_id>`` with its stitch report in
``attrs["lode"]["stitch"]``; all reports also go to ``<STORE>.stitch.json`` beside the store.
Sections are prepared (corrected, registered, seamed) as parallel Ray tasks, then the shards of
all of them render on the raster runner, which records each finished shard in
``.<STORE>.stitch-work`` beside the store: a killed run resumes at its unfinished shards. A section
appears in the store only once all its shards are written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

OWN_MANIFEST = True
URI_ARGS = ("collection", "out")


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


def run(args: argparse.Namespace) -> int:
    import ray

    from engine.errors import LodeInputError
    from engine.io import fs
    from engine.io.atomic import atomic_write_text
    from engine.io.manifest import write_job_manifest
    from engine.stitch.collection import load_correction, section_dirs
    from engine.runtime import init_ray
    from engine.stitch.section import StitchOptions, finish_section, prepare_section, render_sections

    t0 = time.perf_counter()
    secs = section_dirs(args.collection)
    if args.sections:
        unknown = sorted(set(args.sections) - {fs.name(s) for s in secs})
        if unknown:
            raise LodeInputError(args.collection, f"no section(s) {', '.join(unknown)}")
        secs = [s for s in secs if fs.name(s) in set(args.sections)]
    corr = load_correction(args.collection, args.lens, args.flat, args.pattern, not args.no_lens, not args.no_flat)
    opts = StitchOptions(shard=args.shard, levels=args.levels)
    init_ray(num_cpus=args.num_cpus)
    remote = ray.remote(num_cpus=0, **fs.ray_remote_args())(prepare_section)
    futures = {fs.name(s): remote.remote(str(s), args.out, corr, opts) for s in secs}
    results: dict[str, dict] = {}
    prepared = {}
    for name, fut in futures.items():
        try:
            prepared[name] = ray.get(fut)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if not isinstance(cause, LodeInputError):
                raise
            results[name] = {"section": name, "error": str(cause)}
    t_render = time.perf_counter()
    run = render_sections([plan for plan, _ in prepared.values()])
    render_s = time.perf_counter() - t_render
    for key, reason in run.failed.items():
        results[key.split("/")[0]] = {"section": key.split("/")[0], "error": f"shard {key} failed: {reason}"}
    for name, (plan, report) in prepared.items():
        if name not in results:
            results[name] = finish_section(plan, report, render_s)
    results = {name: results[name] for name in futures}
    failed = sum("error" in r for r in results.values())
    summary = {"collection": _absolute(args.collection), "store": _absolute(args.out),
               "calibration": {"lens": None if corr.lens is None else corr.lens.to_dict(),
                               "flat": corr.flat is not None},
               "seconds": round(time.perf_counter() - t0, 3), "sections": results,
               "render": {"shards": run.ran + run.skipped, "ran": run.ran, "skipped": run.skipped}}
    atomic_write_text(report_path(args.out), json.dumps(summary, indent=1))
    units = {name: ({"status": "failed", "reason": rep["error"]} if "error" in rep else
                    {"status": "done", "frames_placed": rep["frames_placed"], "rms_px": rep["rms_px"]})
             for name, rep in results.items()}
    write_job_manifest(args.out, "stitch", vars(args), {"total_s": summary["seconds"]},
                       "failed" if failed else "complete", units=units)
    for name, rep in results.items():
        if "error" in rep:
            print(f"{name}: FAILED {rep['error']}", file=sys.stderr)
        else:
            print(f"{name}: {rep['frames_placed']}/{rep['frames_total']} frames, RMS {rep['rms_px']} px, "
                  f"{rep['panorama_hw'][1]}×{rep['panorama_hw'][0]} px, flagged {rep['flagged'] or 'none'}")
    return 1 if failed else 0


def _absolute(path: str) -> str:
    from engine.io import fs

    return str(path) if fs.is_uri(path) else str(Path(path).resolve())


if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(sys.modules[__name__])
