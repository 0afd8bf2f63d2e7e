"""``lode run COLLECTION --model MODEL.pt --out OUT``: a collection from raw captures to its report, in one job.

Per section, the stages of the individual jobs, with their code: capture calibration and stitching
(``lode stitch``), segmentation (``lode segment``), then grain analysis and the section and collection
reports (``lode analyze``). When the model takes XPL channels (its card's channels after R, G, B),
each section's crossed-polar captures (``<section>/xpl/<angle>/*``, the tiles' file stems) are
stitched with the PPL frames' transforms, registered onto the PPL panorama and stacked as those
channels before it is segmented (:mod:`engine.register.xpl_section`); a section without ``xpl/``
then fails alone. With a PPL-only model, ``xpl/`` folders are ignored (one line says so). ``OUT`` holds

- ``lode.ome.zarr``: each section's panorama (in µm when the collection gives a pixel size; with its
  XPL channels when the model takes them), its mineral labels and, in its attributes, the stitch
  report (frames placed, RMS, flagged frames, the lens and flat used, the pixel size; ``xpl``: the
  angles used and each angle's refinement and residual), the model id and the colour matrix applied:
  a saved one (``--ccm``), or one fitted to the model's reference colours for each section annotated
  in ``--annotations`` (default ``COLLECTION/annotations/<section>.png``, sparse masks on the panorama);
- the tables, exports and report of ``lode analyze`` (``grains.parquet``, ``statistics.parquet``,
  ``report.html``, ...);
- ``manifest.json``: the run, with each section's status per stage (``units``).

The stages keep their own records in ``OUT/.lode-run/`` (the stitched panoramas the segmentation
reads, and the per-shard and per-block status), so a rerun of the same command resumes each section
at its first unfinished stage. A section that fails (an unreadable tile, too few overlaps) fails
alone: the others go on, its reason is in the manifest, and the job ends naming its input (exit 2).
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from jobs.contract import Job

WORK = ".lode-run"
ANNOTATIONS = "annotations"
STAGES = ("stitch", "segment", "analyze")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "collection", help="folder with <section_id>/tiles/* (+ positions.csv, xpl/<angle>/*) and calibration/"
    )
    parser.add_argument("--model", "--checkpoint", dest="model", required=True, help="model checkpoint (.pt)")
    parser.add_argument("--out", required=True, help="output folder (lode.ome.zarr, tables, report, manifest.json)")
    parser.add_argument("--sections", nargs="*", help="only these section ids")
    parser.add_argument("--shard", type=int, default=2048, help="panorama shard (= render block) size in pixels")
    parser.add_argument(
        "--pixel-size-um",
        type=float,
        default=None,
        help="pixel size in µm (default: calibration/pixel_size.json, else each section's fit of its stage "
        "positions in µm, positions.csv file,x_um,y_um; none: measurements stay in pixels)",
    )
    parser.add_argument(
        "--probabilities",
        choices=["none", "uint8", "float16", "float32"],
        default="none",
        help="also store class probabilities",
    )
    parser.add_argument(
        "--ccm", help="saved colour matrices (ccm.json from lode calibrate colour) applied before segmentation"
    )
    parser.add_argument(
        "--annotations",
        help="folder of sparse annotation masks <section>.png on the stitched panoramas (class codes, 255 = none): "
        "each annotated section gets a colour matrix fitted to the model's reference colours "
        f"(default: COLLECTION/{ANNOTATIONS}/ when present)",
    )
    parser.add_argument("--no-report", action="store_true", help="write only the tables, not report.html")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the embedded Ray (ignored with RAY_ADDRESS)")


def stitch_argv(cfg: Any, store: str) -> list[str]:
    """The ``lode stitch`` command line of the run's stitching stage."""
    argv = [cfg.collection, "--out", store, "--shard", str(cfg.shard), "--num-cpus", str(cfg.num_cpus)]
    if cfg.sections:
        argv += ["--sections", *cfg.sections]
    if cfg.pixel_size_um is not None:
        argv += ["--pixel-size-um", str(cfg.pixel_size_um)]
    return argv


def run(cfg: Any) -> int:
    from engine.errors import LodeInputError
    from engine.io import fs
    from engine.io.layout import STORE_NAME
    from engine.runtime import init_ray
    from engine.segment.card import check_checkpoint
    from engine.stitch.collection import section_dirs
    from jobs.common import quiet_ray_data

    t0 = time.perf_counter()
    card = check_checkpoint(cfg.model)  # a bad model or colour option fails here, before any section is stitched
    segment_options(cfg, [], "")
    dirs = {fs.name(s): str(s) for s in section_dirs(cfg.collection)}
    names = list(dirs)
    if cfg.sections:
        unknown = sorted(set(cfg.sections) - set(names))
        if unknown:
            raise LodeInputError(cfg.collection, f"no section(s) {', '.join(unknown)}")
        names = [n for n in names if n in set(cfg.sections)]
    init_ray(num_cpus=cfg.num_cpus)
    quiet_ray_data()
    work = fs.join(cfg.out, WORK)
    progress = _Progress(cfg, names)
    xpl_channels = list(card.channels[3:])
    if not xpl_channels:
        _note_ignored_xpl(names, dirs, card.channels)
    timings: dict[str, float] = {}

    print(
        f"[1/2] stitching {len(names)} section(s) from raw captures, each segmented once it is stitched ...",
        flush=True,
    )
    t = time.perf_counter()
    panoramas = fs.join(work, "panoramas.zarr")
    store = fs.join(cfg.out, STORE_NAME)
    stacker = _XplStacker(cfg, dirs, panoramas, work, xpl_channels) if xpl_channels else None
    measurer = _Measurer(cfg, store)
    segmenter = _Segmenter(cfg, panoramas, fs.join(work, "segment"), stacker, measurer.add)
    try:
        try:
            try:
                progress.stitched(_stitch(cfg, panoramas, segmenter.add))
            finally:
                batches = segmenter.close()
        finally:
            measurer.close()
        for batch, doc in batches:
            progress.segmented(doc, [n for n in batch if n in progress.units])
        timings["stitch_segment_s"] = time.perf_counter() - t

        todo = progress.ready_for("analyze")
        if todo:
            print(f"[2/2] writing the tables and reports of {len(todo)} section(s) ...", flush=True)
            t = time.perf_counter()
            progress.analyzed(_analyze(cfg, store, todo, measurer), todo)
            timings["analyze_s"] = time.perf_counter() - t
    finally:
        measurer.exported()  # no export is cut off half-written
    timings["total_s"] = time.perf_counter() - t0
    return progress.close(timings)


def _stitch(cfg: Any, store: str, on_section: Callable[[str], None]) -> dict[str, dict]:
    """Stitch the sections (``lode stitch``'s code), handing each to ``on_section`` once it is in the
    store: each section's unit of the stitch manifest."""
    from engine.errors import LodeInputError
    from engine.io import fs
    from engine.io.manifest import manifest_path
    from jobs import stitch

    argv = stitch_argv(cfg, store)
    try:
        stitch.stitch_collection(stitch.JOB.validate(stitch.JOB.parser().parse_args(argv)), on_section)
    except LodeInputError:
        if not fs.exists(manifest_path(store)):
            raise  # refused before any section was stitched: the run's own error
    return dict(json.loads(fs.read_bytes(manifest_path(store))).get("units") or {})


class _Segmenter:
    """Segments stitched sections (``lode segment``'s code) in a thread of the driver while the next
    ones are stitched: each segmentation takes every section stitched since the last one began, so a
    section waits for at most one other and the model actor starts once per batch, not per section.
    Only section names wait in the queue; their panoramas are in the work store. The sections of a
    batch that are wholly segmented go on to ``on_segmented``."""

    def __init__(
        self,
        cfg: Any,
        panoramas: str,
        records: str,
        stacker: _XplStacker | None = None,
        on_segmented: Callable[[list[str]], None] = lambda names: None,
    ):
        self.cfg, self.panoramas, self.records, self.stacker = cfg, panoramas, records, stacker
        self.on_segmented = on_segmented
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.batches: list[tuple[list[str], dict[str, Any]]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="lode-segment", daemon=True)
        self.thread.start()

    def add(self, name: str) -> None:
        self.queue.put(name)

    def close(self) -> list[tuple[list[str], dict[str, Any]]]:
        """Wait for the sections handed in so far; each batch's sections and its segmentation record."""
        self.queue.put(None)
        self.thread.join()
        if self.stacker is not None:
            self.stacker.close()
        if self.error is not None:
            raise self.error
        return self.batches

    def _loop(self) -> None:
        last = False
        while not last:
            names = [self.queue.get()]
            while not self.queue.empty():
                names.append(self.queue.get_nowait())
            last = None in names
            batch = [n for n in names if n is not None]
            if not batch or self.error is not None:
                continue
            try:
                inputs, failed = self._inputs(batch)
                doc = _segment(self.cfg, inputs, self.records) if inputs else {}
            except BaseException as exc:  # raised in the driver's thread by close()
                self.error = exc
                continue
            if failed:
                doc = {**doc, "failed_sections": {**doc.get("failed_sections", {}), **failed}}
            self.batches.append((batch, doc))
            done = [n for n, u in segment_units(doc, batch).items() if u["status"] == "done"]
            if done:
                print(f"  segmented {', '.join(done)}", flush=True)
                self.on_segmented(done)

    def _inputs(self, batch: list[str]) -> tuple[list[str], dict[str, str]]:
        """The segmentation inputs of ``batch``: each stitched panorama, or with a model that takes XPL
        channels its XPL stack; and the sections whose XPL could not be stacked, with the reason."""
        from engine.errors import LodeInputError
        from engine.io import fs

        if self.stacker is None:
            return [fs.join(self.panoramas, n) for n in batch], {}
        inputs, failed = [], {}
        for n in batch:
            try:
                inputs.append(self.stacker.stack(n))
            except LodeInputError as exc:
                failed[n] = str(exc)
                print(f"  {n}: no XPL channels ({exc})", flush=True)
        return inputs, failed


def _note_ignored_xpl(names: list[str], dirs: dict[str, str], channels: list[str]) -> None:
    """One line when sections have XPL captures that a PPL-only model does not take."""
    from engine.register.xpl_section import has_xpl

    with_xpl = [n for n in names if has_xpl(dirs[n])]
    if with_xpl:
        print(
            f"note: {len(with_xpl)} section(s) have xpl/ captures ({', '.join(with_xpl[:5])}); the model takes "
            f"{', '.join(channels)} only: XPL ignored",
            flush=True,
        )


class _XplStacker:
    """Each stitched section's XPL channels (``engine.register.xpl_section``) in ``OUT/.lode-run/xpl.zarr``:
    the stacked section the segmentation reads instead of the PPL panorama. The collection's flat
    field is loaded and the frame corrector started for the first section."""

    def __init__(self, cfg: Any, dirs: dict[str, str], panoramas: str, work: str, channels: list[str]):
        from engine.io import fs

        self.cfg, self.dirs, self.panoramas, self.channels = cfg, dirs, panoramas, channels
        self.store, self.work = fs.join(work, "xpl.zarr"), fs.join(work, "xpl-work")
        self.flat: Any = None
        self.corrector: Any = None

    def stack(self, name: str) -> str:
        """The stacked section of ``name`` (made, or kept from an earlier run with the same inputs)."""
        from engine.io import fs
        from engine.register.xpl_section import stack_section_xpl
        from engine.stitch.collection import load_correction
        from engine.stitch.section import frame_corrector

        if self.corrector is None:
            self.flat = load_correction(self.cfg.collection, use_lens=False).flat
            self.corrector = frame_corrector()
        rec = stack_section_xpl(
            self.dirs[name],
            self.panoramas,
            name,
            self.store,
            self.channels,
            self.flat,
            self.corrector,
            fs.join(self.work, name),
        )
        print(
            f"  {name}: XPL {', '.join(rec['angles'])} stitched with the PPL transforms, refined by at most "
            f"{rec['max_shift_px']} px (residual {rec['residual_px']} px)",
            flush=True,
        )
        return fs.join(self.store, name)

    def close(self) -> None:
        import ray

        if self.corrector is not None:
            ray.kill(self.corrector, no_restart=True)
            self.corrector = None


def segment_options(cfg: Any, inputs: list[str], records: str) -> Any:
    """The ``SegmentOptions`` of the run's segmentation of ``inputs`` (stitched sections): a saved
    ``--ccm``, else a colour matrix for each section with an annotation (``--annotations``, by default
    ``COLLECTION/annotations/`` when present), else none."""
    from engine.errors import LodeInputError
    from engine.io import fs
    from engine.segment.pipeline import SegmentOptions

    annotations = cfg.annotations
    if annotations is None and cfg.ccm is None and fs.isdir(fs.join(cfg.collection, ANNOTATIONS)):
        annotations = fs.join(cfg.collection, ANNOTATIONS)
    if annotations is not None and cfg.ccm is not None:
        raise LodeInputError(annotations, "--ccm applies saved matrices; it cannot be combined with --annotations")
    return SegmentOptions(
        inputs=inputs,
        out=cfg.out,
        checkpoint=cfg.model,
        probabilities=cfg.probabilities,
        ccm=cfg.ccm,
        colour="none" if annotations is None else "annotated",
        annotations=annotations,
        records=records,
        read_ahead=False,
    )


def _segment(cfg: Any, inputs: list[str], records: str) -> dict[str, Any]:
    """Segment stitched sections (``lode segment``'s code) into ``OUT/lode.ome.zarr``; the run's record."""
    from engine.errors import LodeInputError
    from engine.io.manifest import RunManifest
    from engine.segment.pipeline import run_segmentation

    try:
        return run_segmentation(segment_options(cfg, inputs, records))
    except LodeInputError as exc:  # some sections failed (the record says which), or the batch could not start
        return {**(RunManifest(records).read() or {}), "error": str(exc)}


class _Measurer:
    """Measures each segmented batch's grains (``lode analyze``'s code) in a thread of the driver,
    while later sections are stitched and segmented, and starts the batch's exports (one Ray task
    per section), which run on while the next batch is measured and the collection's tables are
    written. The grain blocks stay in ``OUT/.grains-work`` for the collection's tables
    (:func:`_analyze`), which then only merge them. A batch that fails here is measured again
    there, where its error is reported; an export that fails here is written again after them."""

    def __init__(self, cfg: Any, store: str):
        self.cfg, self.store = cfg, store
        self.queue: queue.Queue[list[str] | None] = queue.Queue()
        self.exports: dict[str, Any] = {}
        self.written: set[str] | None = None
        self.thread = threading.Thread(target=self._loop, name="lode-measure", daemon=True)
        self.thread.start()

    def add(self, names: list[str]) -> None:
        self.queue.put(names)

    def close(self) -> None:
        """Wait for the grain passes of the batches handed in so far (their exports may still run)."""
        self.queue.put(None)
        self.thread.join()

    def exported(self) -> set[str]:
        """Wait for the exports started (once); the sections whose exports are written."""
        import ray

        if self.written is None:
            self.written = set()
            for name, ref in self.exports.items():
                try:
                    ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - written again after the collection's tables, which report
                    print(f"  {name}: exported again at the end ({type(exc).__name__})", flush=True)
                    continue
                self.written.add(name)
        return self.written

    def _loop(self) -> None:
        from engine.analyze.collection import measure_grains
        from engine.export.sections import submit_exports

        while (names := self.queue.get()) is not None:
            try:
                grains = measure_grains(self.store, self.cfg.out, executor="ray", sections=names)
                self.exports.update(submit_exports(self.store, grains.grain_table(), self.cfg.out, sections=names))
            except Exception as exc:  # noqa: BLE001 - the collection's analysis measures them again and reports
                print(f"  {', '.join(names)}: measured again at the end ({type(exc).__name__})", flush=True)
                continue
            counts = ", ".join(f"{s.name} {len(t)}" for s, t in zip(grains.sections, grains.tables, strict=True))
            print(f"  measured {counts} grains", flush=True)


def _analyze(cfg: Any, store: str, sections: list[str], measurer: _Measurer) -> Any:
    """Grains (the blocks not measured yet), statistics and the reports (``lode analyze``'s code) of
    the segmented sections, while the measurer's exports finish; then the exports of the others
    (one Ray task per section)."""
    from engine.analyze.collection import analyze_store
    from engine.export.sections import export_sections
    from engine.io import fs

    res = analyze_store(store, cfg.out, executor="ray", sections=sections, report=not cfg.no_report)
    export = [n for n in sections if n not in measurer.exported()]
    if export:
        export_sections(store, res.grains_path, fs.parent(str(res.grains_path)), sections=export, executor="ray")
    return res


def segment_units(doc: dict[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """Each section's segmentation status in a batch's record ``doc``: done when all its blocks are
    (``doc["blocks"]``); otherwise failed, with its reason, or the batch's error when it did not start."""
    failed = doc.get("failed_sections", {})
    blocks: dict[str, list[str]] = {}
    for b in doc.get("blocks", []):
        blocks.setdefault(b["unit"].split("/")[0], []).append(b["status"])
    units = {}
    for n in names:
        states = blocks.get(n, [])
        if states and all(s == "done" for s in states):
            units[n] = {"status": "done", "blocks": len(states)}
        else:
            units[n] = {"status": "failed", "reason": failed.get(n) or doc.get("error") or "not segmented"}
    return units


class _Progress:
    """Each section's status per stage, recorded in ``OUT/manifest.json`` after every stage."""

    def __init__(self, cfg: Any, names: list[str]):
        self.cfg, self.names = cfg, names
        self.units: dict[str, dict[str, dict]] = {n: {} for n in names}
        self.error: Exception | None = None

    def ready_for(self, stage: str) -> list[str]:
        before = STAGES[STAGES.index(stage) - 1]
        return [n for n in self.names if self.units[n].get(before, {}).get("status") == "done"]

    def stitched(self, units: dict[str, dict]) -> None:
        for n in self.names:
            u = units.get(n, {"status": "failed", "reason": "not stitched"})
            keep = ("status", "reason", "frames_placed", "rms_px")
            self.units[n]["stitch"] = {k: u[k] for k in keep if k in u}
        self._record("running")

    def segmented(self, doc: dict[str, Any], todo: list[str]) -> None:
        """Record a segmentation batch (:func:`segment_units`)."""
        for n, unit in segment_units(doc, todo).items():
            self.units[n]["segment"] = unit
        self._record("running")

    def analyzed(self, res: Any, todo: list[str]) -> None:
        import pandas as pd

        grains = pd.read_parquet(str(res.grains_path), columns=["section"])["section"].value_counts()
        stats = pd.read_parquet(str(res.statistics_path))
        area = stats[(stats["scope"] == "section") & (stats["statistic"] == "area_fraction")]
        for n in todo:
            mine = area[area["section"] == n].nlargest(3, "value")
            self.units[n]["analyze"] = {
                "status": "done",
                "grains": int(grains.get(n, 0)),
                "composition": {r.class_name: round(100 * float(r.value), 1) for r in mine.itertuples()},
            }
        self._record("running")

    def _record(self, status: str, timings: dict | None = None, error: str | None = None) -> None:
        from engine.io.manifest import write_job_manifest

        write_job_manifest(
            self.cfg.out, "run", self.cfg.model_dump(), timings or {}, status, units=self.units, error=error
        )

    def close(self, timings: dict[str, float]) -> int:
        """Write the final manifest, print a line per section; raise for the first failed section."""
        from engine.errors import LodeInputError
        from engine.io import fs

        failed = {
            n: (stage, self.units[n][stage].get("reason", ""))
            for n in self.names
            for stage in STAGES
            if self.units[n].get(stage, {}).get("status") == "failed"
        }
        status = "complete" if not failed else "partial" if len(failed) < len(self.names) else "failed"
        error = None
        if failed:
            first = next(iter(failed))
            stage, reason = failed[first]
            error = LodeInputError(
                fs.join(str(self.cfg.collection), first),
                f"section {first} failed at {stage} ({reason}); {len(failed) - 1} other section(s) failed, "
                f"{len(self.names) - len(failed)} complete: see {fs.join(str(self.cfg.out), 'manifest.json')}",
            )
        self._record(status, {k: round(v, 3) for k, v in timings.items()}, None if error is None else str(error))
        for n in self.names:
            u = self.units[n]
            if n in failed:
                print(f"{n}: FAILED at {failed[n][0]}")
                continue
            st, sg, an = u["stitch"], u["segment"], u["analyze"]
            modes = ", ".join(f"{k} {v} %" for k, v in an["composition"].items())
            print(
                f"{n}: {st.get('frames_placed')} frames stitched (RMS {st.get('rms_px')} px), "
                f"{sg['blocks']} block(s) segmented, {an['grains']} grains; {modes}"
            )
        print(f"Finished in {timings['total_s']:.0f} s: {fs.join(str(self.cfg.out), 'manifest.json')}")
        if error is not None:
            raise error
        return 0


JOB = Job(
    "run",
    add_arguments,
    run,
    description=__doc__,
    uri_fields=("collection", "out", "model", "annotations"),
    own_manifest=True,
)

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
