"""Stitch every section of a collection into one OME-Zarr store (``lode stitch COLLECTION --out STORE``).

Each section becomes a multiscale image group ``<section_id>`` with its stitch report in
``attrs["lode"]["stitch"]``; all reports also go to ``<STORE>.stitch.json`` beside the store.
A collection streams: at most ``--sections-in-flight`` sections are in flight at once (default: one per
two CPUs of the cluster, as many as half its object store holds, at least one). Each is prepared
(corrected, registered, seamed) as a Ray task, then its shards render on the raster runner, which
records each finished shard in ``.<STORE>.stitch-work`` beside the store: a killed run resumes at
its unfinished shards. Only when a section is published (it appears in the store once all its shards
are written) does the next one start, and no frame of it stays in the object store. Each finished
section is recorded at once, with the fingerprint of its inputs, in ``<STORE>.manifest.json``; a
rerun skips those, so a killed job resumes at its first unfinished section. The store's root group
is created once, before any section starts.

A section with a bad tile (truncated, corrupt, 16-bit, grey or RGBA; see ``engine.io.images.read_rgb``)
fails alone: the others are stitched, the manifest records each failure, and the job ends with one
line naming the first bad input (exit 2). Blank frames are flagged in the report.

A panorama's pixel size (its NGFF scale, in micrometres) is ``--pixel-size-um``, else the collection's
``calibration/pixel_size.json``, else the one a section's stage positions in micrometres give
(``positions.csv`` with columns ``file,x_um,y_um``; :mod:`engine.stitch.stage`); the report says which
(``pixel_size_source``), and a stage fit more than 2 % from the given size is logged as a warning.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.contract import Job


def _pattern(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"pattern must look like 9x6, not {text!r}") from exc
    return a, b


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("collection", help="folder with <section_id>/tiles/* (+ positions.csv) and calibration/")
    parser.add_argument("--out", required=True, help="output OME-Zarr store (created or extended)")
    parser.add_argument("--sections", nargs="*", help="only these section ids")
    parser.add_argument("--lens", help="lens model JSON (default: calibration/lens.json or fit from checkerboard/)")
    parser.add_argument("--flat", help="flat field .npz (default: calibration/flat.npz or fit from flat/, dark/)")
    parser.add_argument("--no-lens", action="store_true", help="do not undistort")
    parser.add_argument("--no-flat", action="store_true", help="do not flat-field correct")
    parser.add_argument("--pattern", type=_pattern, default=(9, 6), help="checkerboard inner corners (default 9x6)")
    parser.add_argument(
        "--matcher",
        choices=("sift", "loftr"),
        default="sift",
        help="pair matcher: SIFT (default), or kornia's LoFTR with --matcher-weights (on a GPU if the cluster has one)",
    )
    parser.add_argument("--matcher-weights", help="local LoFTR weights file (state dict); nothing is downloaded")
    parser.add_argument("--shard", type=int, default=2048, help="output shard (= render block) size in pixels")
    parser.add_argument("--levels", type=int, default=3, help="pyramid levels")
    parser.add_argument(
        "--blend",
        choices=("multiband", "feather"),
        default="multiband",
        help="seam blending: Laplacian-pyramid multiband (default) or the feathered low-res seam",
    )
    parser.add_argument(
        "--blend-levels", type=int, default=None, help="multiband pyramid levels (default: from the frame size)"
    )
    parser.add_argument(
        "--no-seam-refine",
        action="store_true",
        help="keep the low-res seam as it is (default: cut it again at full resolution near the seam; multiband only)",
    )
    parser.add_argument(
        "--model",
        choices=("similarity", "homography"),
        default="similarity",
        help="frame transform: similarity (default), or homography for stages that tilt (the lens is then not refined)",
    )
    parser.add_argument(
        "--pixel-size-um",
        type=float,
        default=None,
        help="pixel size in µm (default: calibration/pixel_size.json, else fitted to a section's stage positions "
        "in µm; none: the panorama stays in pixels)",
    )
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the embedded Ray (ignored with RAY_ADDRESS)")
    parser.add_argument(
        "--sections-in-flight",
        type=_at_least_one,
        default=None,
        help="sections prepared at once (default: one per 2 CPUs, as many as half the object store holds; at least 1)",
    )


def report_path(store: str | Path) -> str:
    from engine.io import fs

    return fs.join(fs.parent(store), fs.name(store) + ".stitch.json")


def run(cfg: Any) -> int:
    return stitch_collection(cfg)


def stitch_collection(cfg: Any, on_section: Callable[[str], None] | None = None) -> int:
    """The job's body; ``on_section(name)`` is called in this thread as each section is in the store
    (stitched now, or before and skipped), so a caller can start its next stage on it."""
    import ray

    from engine.errors import LodeInputError
    from engine.io import fs
    from engine.runtime import init_ray
    from engine.stitch.collection import (
        load_pixel_size,
        section_bytes,
        section_dirs,
        sections_in_flight,
    )
    from engine.stitch.learned import check_weights, load_loftr
    from engine.stitch.register import RegisterOptions
    from engine.stitch.section import StitchOptions, create_root, drop_work, frame_corrector

    t0 = time.perf_counter()
    if cfg.sections_in_flight is not None and cfg.sections_in_flight < 1:
        raise LodeInputError("--sections-in-flight", f"must be at least 1, not {cfg.sections_in_flight}")
    secs = section_dirs(cfg.collection)
    if cfg.sections:
        unknown = sorted(set(cfg.sections) - {fs.name(s) for s in secs})
        if unknown:
            raise LodeInputError(cfg.collection, f"no section(s) {', '.join(unknown)}")
        secs = [s for s in secs if fs.name(s) in set(cfg.sections)]
    register = RegisterOptions()
    if cfg.matcher == "loftr":
        weights = check_weights(cfg.matcher_weights)
        load_loftr(str(weights))  # foreign weights fail here, before any frame is read
        register = RegisterOptions(matcher="loftr", matcher_weights=str(weights.resolve()))
    elif cfg.matcher_weights:
        raise LodeInputError("--matcher-weights", "is only used with --matcher loftr")
    source = "option" if cfg.pixel_size_um is not None else "calibration"
    pixel_size = cfg.pixel_size_um if cfg.pixel_size_um is not None else load_pixel_size(cfg.collection)
    if pixel_size is not None and not (math.isfinite(pixel_size) and pixel_size > 0):
        raise LodeInputError("--pixel-size-um", f"must be a positive number of micrometres, not {pixel_size}")
    try:
        opts = StitchOptions(
            shard=cfg.shard,
            levels=cfg.levels,
            register=register,
            blend=cfg.blend,
            blend_levels=cfg.blend_levels,
            seam_refine=not cfg.no_seam_refine,
            model=cfg.model,
            pixel_size_um=pixel_size,
            pixel_size_source=source,
        )
    except ValueError as exc:
        raise LodeInputError("--blend-levels", str(exc)) from exc
    init_ray(num_cpus=cfg.num_cpus)
    dirs = {fs.name(s): str(s) for s in secs}
    done = _previous_units(cfg.out)
    # the frame corrector's process starts (and imports torch) while the calibration is fitted
    prestarted = [frame_corrector()] if any(done.get(n, {}).get("status") != "done" for n in dirs) else []
    corr_ref, corr = _fitted_correction(cfg)
    create_root(cfg.out)
    k = cfg.sections_in_flight or min(
        len(dirs), sections_in_flight(ray.cluster_resources(), max(section_bytes(d) for d in dirs.values()))
    )
    stream = _Stream(cfg, dirs, corr_ref, corr, opts, k, on_section)
    stream.run(prestarted)
    drop_work(cfg.out)
    return stream.close(time.perf_counter() - t0)


class _Stream:
    """Stitch a collection's sections with at most ``k`` in flight: a section's frames are corrected
    by the job's frame corrector (a Ray task), then it is registered and planned (another, which no
    longer holds the corrector: the actor goes once the last section's frames are corrected),
    rendered once planned and published; only then does the next one start. Each finished
    (or failed) section is recorded at once in the job's manifest with its fingerprint; a rerun
    skips the sections recorded done with the same fingerprint whose group is in the store."""

    def __init__(
        self,
        cfg: Any,
        dirs: dict[str, str],
        corr_ref: Any,
        corr: Any,
        opts: Any,
        k: int,
        on_section: Callable[[str], None] | None = None,
    ):
        from engine.io import fs
        from engine.stitch.section import section_fingerprint

        self.cfg, self.dirs, self.opts, self.k = cfg, dirs, opts, k
        self.calibration = {"lens": None if corr.lens is None else corr.lens.to_dict(), "flat": corr.flat is not None}
        self.on_section = on_section or (lambda name: None)
        self.units = _previous_units(cfg.out)
        self.results: dict[str, dict] = {}
        self.errors: dict[str, Any] = {}
        self.fingerprints: dict[str, str | None] = {}
        for name, d in dirs.items():
            try:
                self.fingerprints[name] = section_fingerprint(d, corr, opts)
            except Exception:  # an unreadable section fails in its own task, with its reason
                self.fingerprints[name] = None
        self.skipped = [
            name
            for name in dirs
            if self.fingerprints[name] is not None
            and self.units.get(name, {}).get("status") == "done"
            and self.units[name].get("fingerprint") == self.fingerprints[name]
            and fs.exists(fs.join(cfg.out, name, "zarr.json"))
        ]
        self.event = 0
        self.shards = {"ran": 0, "skipped": 0}
        self.corr_ref = corr_ref

    def run(self, prestarted: list[Any]) -> None:
        """Stitch the sections not skipped. ``prestarted`` holds the job's frame corrector if it was started
        already (else one is started here, when a section is to be corrected); it is taken out of the
        list, and the actor is killed as the last section's frames are corrected, before that section registers."""
        import ray

        from engine.stitch.section import CorrectionRef, correct_section, frame_corrector, plan_section

        for name in self.skipped:
            self.results[name] = _stored_report(self.cfg.out, name)
            self._say(name)
            self.on_section(name)
        correct = ray.remote(num_cpus=0, **_remote_args())(correct_section)
        plan = ray.remote(num_cpus=0, **_remote_args())(plan_section)
        todo = [name for name in self.dirs if name not in self.skipped]
        corrector = prestarted.pop() if prestarted else None
        if not todo:
            corrector = None
        elif corrector is None:
            corrector = frame_corrector()
        correcting: dict[Any, str] = {}
        planning: dict[Any, str] = {}
        started: dict[str, int] = {}
        while todo or correcting or planning:
            while todo and len(correcting) + len(planning) < self.k:
                name = todo.pop(0)
                ref = CorrectionRef(self.corr_ref)
                correcting[correct.remote(self.dirs[name], self.cfg.out, ref, self.opts, corrector)] = name
                started[name] = self._tick()
            [ready], _ = ray.wait([*correcting, *planning], num_returns=1)
            if ready in correcting:  # a failed correction fails its plan task with its error
                name = correcting.pop(ready)
                if not todo and not correcting:
                    ray.kill(corrector, no_restart=True)  # no section needs it: its memory goes before they register
                    corrector = None
                planning[plan.remote(ready, CorrectionRef(self.corr_ref), self.opts)] = name
            else:
                name = planning.pop(ready)
                self._finish(name, ready, started[name])
            del ready

    def _tick(self) -> int:
        self.event += 1
        return self.event

    def _finish(self, name: str, ref: Any, started: int) -> None:
        """Render and publish a prepared section (or record why it failed), then record it."""
        import ray

        from engine.errors import LodeInputError, input_error_of, strip_ansi
        from engine.io import fs
        from engine.stitch.section import finish_section, render_sections

        try:
            plan, report = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = input_error_of(exc)
            if cause is None:
                raise
            self._fail(name, LodeInputError(cause.source, strip_ansi(cause.reason)), started)
            return
        t = time.perf_counter()
        run = render_sections([plan])
        self.shards["ran"] += run.ran
        self.shards["skipped"] += run.skipped
        if run.failed:
            key, reason = next(iter(run.failed.items()))
            self._fail(
                name,
                LodeInputError(fs.join(self.dirs[name], "tiles"), f"shard {key} failed: {strip_ansi(reason)}"),
                started,
            )
            return
        rep = finish_section(plan, report, time.perf_counter() - t)
        self.results[name] = rep
        self._record(
            name,
            {"status": "done", "frames_placed": rep["frames_placed"], "rms_px": rep["rms_px"]},
            started,
        )
        self._say(name)
        self.on_section(name)

    def _say(self, name: str) -> None:
        """The section's summary line, as soon as it is in the store."""
        rep = self.results[name]
        if "error" in rep:
            return
        print(
            f"{name}: {rep['frames_placed']}/{rep['frames_total']} frames, RMS {rep['rms_px']} px, "
            f"{rep['panorama_hw'][1]}×{rep['panorama_hw'][0]} px, {_pixel_size(rep)}, "
            f"flagged {', '.join(rep['flagged']) or 'none'}" + (" (stitched before)" if name in self.skipped else ""),
            flush=True,
        )

    def _fail(self, name: str, error: Any, started: int) -> None:
        self.errors[name] = error
        self.results[name] = {"section": name, "error": str(error)}
        self._record(name, {"status": "failed", "reason": str(error)}, started)

    def _record(self, name: str, unit: dict, started: int) -> None:
        from engine.io.manifest import write_job_manifest

        self.units[name] = {**unit, "fingerprint": self.fingerprints[name], "events": [started, self._tick()]}
        write_job_manifest(
            self.cfg.out,
            "stitch",
            self.cfg.model_dump(),
            {},
            "running",
            units=self.units,
            extra={"sections_in_flight": self.k},
        )

    def close(self, seconds: float) -> int:
        """Write the summary and the final manifest; raise the first failure (bad input, exit 2)."""
        from engine.io.atomic import atomic_write_text
        from engine.io.manifest import manifest_path, write_job_manifest

        sections = list(self.dirs)
        results = {name: self.results[name] for name in sections}
        summary = {
            "collection": _absolute(self.cfg.collection),
            "store": _absolute(self.cfg.out),
            "calibration": self.calibration,
            "seconds": round(seconds, 3),
            "sections_in_flight": self.k,
            "sections": results,
            "skipped_sections": self.skipped,
            "render": {"shards": self.shards["ran"] + self.shards["skipped"], **self.shards},
        }
        atomic_write_text(report_path(self.cfg.out), json.dumps(summary, indent=1))
        errors = self.errors
        error = _failure(errors, sections, manifest_path(self.cfg.out)) if errors else None
        write_job_manifest(
            self.cfg.out,
            "stitch",
            self.cfg.model_dump(),
            {"total_s": summary["seconds"]},
            "complete" if not errors else "partial" if len(errors) < len(sections) else "failed",
            units=self.units,
            error=None if error is None else str(error),
            extra={"sections_in_flight": self.k},
        )
        if error is not None:
            raise error
        return 0


def _pixel_size(report: dict) -> str:
    """A section's pixel size and where it came from, as its summary line says it."""
    size, source = report.get("pixel_size_um"), report.get("pixel_size_source")
    if size is None:
        return "no pixel size"
    return f"{size:g} µm/px" + (f" ({source})" if source else "")


def _fitted_correction(cfg: Any) -> tuple[Any, Any]:
    """The collection's correction (lens and flat field) and its ref in the object store, fitted from
    its calibration frames in a worker that exits afterwards: the driver neither reads the frames the
    fit reads nor touches the flat field (it reads the lens and the key; the flat stays in the object
    store, read there by the frame corrector). A bad calibration input raises its ``LodeInputError``."""
    import ray

    from engine.errors import input_error_of
    from engine.stitch.collection import load_correction

    def fit() -> Any:
        corr = load_correction(cfg.collection, cfg.lens, cfg.flat, cfg.pattern, not cfg.no_lens, not cfg.no_flat)
        _ = corr.key  # hashed here and pickled with it: no reader hashes the flat again
        return corr

    ref = ray.remote(num_cpus=1, max_calls=1, **_remote_args())(fit).remote()
    try:
        return ref, ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = input_error_of(exc)
        if cause is None:
            raise
        raise cause from None


def _remote_args() -> dict:
    from engine.io import fs

    return fs.ray_remote_args()


def _previous_units(store: str) -> dict[str, dict]:
    """The units of the store's job manifest (a killed run's progress included); none when unreadable."""
    from engine.io import fs
    from engine.io.manifest import manifest_path

    path = manifest_path(store)
    if not fs.exists(path):
        return {}
    try:
        doc = json.loads(fs.read_bytes(path))
    except json.JSONDecodeError:
        return {}
    return dict(doc.get("units") or {}) if doc.get("job") == "stitch" else {}


def _stored_report(store: str, name: str) -> dict:
    from engine.io.layout import attrs_of
    from engine.io.ome import open_store

    return attrs_of(open_store(store, mode="r")[name])["lode"]["stitch"]


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
