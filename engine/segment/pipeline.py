"""The segmentation job: planning, the output store, and segmentation as a block stage run by
the raster runner (read block + halo and stage its image shards → colour matrix, windows,
model, blend on the actor pool, GPU when the cluster has one → whole-shard label writes).
A block is recorded as done only after all its shards are written; reruns skip done blocks.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np

from engine.errors import LodeInputError
from engine.io import fs
from engine.io.integrity import mark_complete
from engine.io.layout import MINERALS, PROBABILITIES, STORE_NAME, group_at
from engine.io.manifest import RunManifest
from engine.io.ome import (
    PyramidLayout,
    create_image,
    create_labels,
    labels_of,
    layout_of,
    list_sections,
    open_store,
    write_block,
)
from engine.io.sources import SectionSource, discover
from engine.raster.grid import PaddedGrid, auto_block, block_grid
from engine.raster.runner import RunOptions, run_stage
from engine.raster.stage import BlockStage, Unit
from engine.segment.card import ModelCard, check_checkpoint

if TYPE_CHECKING:
    from engine.calibrate.colour import ColourMatrix
    from engine.register.xpl import XplStackSource

Source: TypeAlias = "SectionSource | XplStackSource"
"""A section to segment: its stored image, or that image with its registered XPL captures."""

log = logging.getLogger("lode.segment")


@dataclass(frozen=True)
class SegmentOptions:
    """One segmentation run: inputs, checkpoint, output and how to run. ``jobs.segment`` builds it
    from the job's validated config (``schemas.config.SegmentConfig``: same fields and defaults).
    ``colour``: fit a matrix from ``annotations/<section>.png`` (sparse class masks on the image) per
    section (``per-image``: every section needs one), one for all (``series``), or per annotated
    section, leaving the others as they are (``annotated``, what ``lode run`` does).
    ``ccm``: a saved colour matrix file (``lode calibrate colour``) applied instead of fitting one.
    ``records``: the folder of the run's manifest and per-block records (default ``out``; ``lode run``
    keeps them in its work folder, so that its own manifest is the output's).
    ``read_ahead``: on CPU, read (and stage) blocks in Ray tasks of their own, so that the first block is
    read while the model actor starts; off, the model actor reads each block itself (no copy through the
    object store, no read task waiting for a CPU: what ``lode run`` does while its stitching holds the CPUs)."""

    inputs: list[str]
    out: str
    checkpoint: str
    window: int | None = None
    overlap: float | None = None
    batch_size: int = 8
    block: tuple[int, int] | None = None
    chunk: int = 512
    levels: int = 3
    probabilities: Literal["none", "uint8", "float16", "float32"] = "none"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_actors: int | None = None
    threads: int | None = None
    copy_image: bool = True
    read_ahead: bool = True
    max_blocks: int | None = None
    colour: Literal["none", "per-image", "series", "annotated"] = "none"
    annotations: str | None = None
    xpl: str | None = None
    ccm: str | None = None
    records: str | None = None


class SegmentStage(BlockStage):
    """Segmentation as a block stage: read a block plus the halo its windows need (optionally
    staging the block's image shards into the output store) → colour matrix, windows, model and
    Gaussian blend on the actor's device → whole-shard label (and probability) writes."""

    name = "segment"
    model = True

    def __init__(
        self,
        sources: dict[str, Source],
        out: str,
        checkpoint: str,
        window: int,
        overlap: float,
        batch_size: int,
        probabilities: str,
        threads: int | None,
        copy_image: bool,
        matrices: dict[str, ColourMatrix] | None = None,
    ):
        self.sources, self.out, self.checkpoint = sources, out, checkpoint
        self.window, self.overlap, self.batch_size = window, overlap, batch_size
        self.probabilities, self.threads, self.copy_image = probabilities, threads, copy_image
        self.matrices = matrices or {}
        self.predictor: Any = None

    def size_bytes(self, unit: Unit) -> int:
        src, b = self.sources[unit.raster], unit.block
        return src.channels * (b.h + self.window) * (b.w + self.window)

    def read(self, unit: Unit) -> dict[str, Any]:
        """The block plus halo, interleaved ``(h, w, c)`` as the model actor cuts its windows (so
        the actor blends straight from the object store, without a copy)."""
        src, b = self.sources[unit.raster], unit.block
        y0, y1, x0, x1 = PaddedGrid(src.height, src.width, self.window, self.overlap).input_region(b)
        region = src.read(y0, y1, x0, x1)
        if region.shape[0] != src.channels:
            raise LodeInputError(src.path, f"expected {src.channels} channels, read {region.shape[0]}")
        if self.copy_image:
            oy, ox = b.y0 - y0, b.x0 - x0
            write_block(_open_out(self.out)[unit.raster], region[:, oy : oy + b.h, ox : ox + b.w], b.y0, b.x0, "image")
        return {"region": np.ascontiguousarray(np.moveaxis(region, 0, -1)), "ry0": y0, "rx0": x0}

    def setup(self, device: str) -> None:
        if self.predictor is not None:
            return
        import torch

        from engine.segment.checkpoint import load_inference_model
        from engine.segment.predictor import BlockPredictor

        if device == "cpu":
            self.threads = self.threads or os.cpu_count() or 1
            torch.set_num_threads(self.threads)
        else:
            self.threads = None
        model, card = load_inference_model(self.checkpoint, self.window, device=device)
        self.codes = np.array(card.class_set(self.checkpoint).codes, dtype=np.uint8)
        self.predictor = BlockPredictor(model, card.mean, card.std, self.window, self.overlap, self.batch_size, device)
        self.predictor.warm_up()

    def compute(self, unit: Unit, data: dict[str, Any]) -> dict[str, Any]:
        if self.threads:
            import torch

            # Ray Data may call this from another thread than setup; OpenMP's thread count is
            # per calling thread (Ray workers start with OMP_NUM_THREADS=1).
            torch.set_num_threads(self.threads)
        src = self.sources[unit.raster]
        before = self.predictor.windows_run
        idx, probs = self.predictor.predict(
            np.moveaxis(data["region"], -1, 0),
            (int(data["ry0"]), int(data["rx0"])),
            (src.height, src.width),
            unit.block,
            len(self.codes),
            None if self.probabilities == "none" else self.probabilities,
            self.matrices.get(unit.raster),
        )
        out: dict[str, Any] = {"labels": self.codes[idx], "windows": self.predictor.windows_run - before}
        if probs is not None:
            out["probabilities"] = probs
        return out

    def write(self, unit: Unit, result: dict[str, Any]) -> dict[str, Any]:
        b = unit.block
        img = _open_out(self.out)[unit.raster]
        write_block(labels_of(img, MINERALS), np.asarray(result["labels"]), b.y0, b.x0, "label")
        if result.get("probabilities") is not None:
            write_block(img[PROBABILITIES], np.asarray(result["probabilities"]), b.y0, b.x0, "image")
        return {"windows": int(result["windows"])}

    def finish(self, raster: str) -> None:
        img = _open_out(self.out)[raster]
        mark_complete(labels_of(img, MINERALS))
        mark_complete(img)


def _open_out(out: str):
    return open_store(fs.join(out, STORE_NAME), mode="r+")


_PROBABILITY_BLOCK_PIXELS = 4096 * 12288


@dataclass
class Plan:
    """Sections that can run, their block layouts, and the sections that cannot be planned
    (``failed``: section id → the error naming its input)."""

    sources: list[Source]
    layouts: dict[str, PyramidLayout]
    window: int
    overlap: float
    failed: dict[str, LodeInputError]


def plan(cfg: SegmentOptions, card: ModelCard) -> Plan:
    """Plan every section; one that cannot be planned fails alone unless none can be planned."""
    window = cfg.window or card.window
    overlap = card.overlap if cfg.overlap is None else cfg.overlap
    failed: dict[str, LodeInputError] = {}
    sources: list[Source] = []
    for found in discover(cfg.inputs, failed):
        try:
            found.check()
            s: Source = found
            if cfg.xpl:
                from engine.register.xpl import attach_xpl

                (s,) = attach_xpl([found], cfg.xpl, card.channels[3:])
            if s.channels != card.in_channels:
                raise LodeInputError(
                    s.path,
                    f"has {s.channels} channels; the model expects {card.in_channels} ({', '.join(card.channels)})",
                )
        except LodeInputError as exc:
            failed[found.section] = exc
            continue
        sources.append(s)
    if not sources:
        raise next(iter(failed.values()))
    layouts = {}
    for s in sources:
        step = cfg.chunk * 2 ** (cfg.levels - 1) if cfg.chunk * 2 ** (cfg.levels - 1) <= 4096 else 2 ** (cfg.levels - 1)
        # A block of probabilities holds (classes × dtype) bytes per pixel: half the pixels of labels alone.
        most = _PROBABILITY_BLOCK_PIXELS if cfg.probabilities != "none" else None
        shard = max(step, 256)
        block = tuple(cfg.block) if cfg.block else auto_block(s.height, s.width, window, shard, max_block_pixels=most)
        layouts[s.section] = PyramidLayout(block, chunk=cfg.chunk, levels=cfg.levels)  # type: ignore[arg-type]
    return Plan(sources, layouts, window, overlap, failed)


def _record_colour(cfg: SegmentOptions, matrices: dict[str, Any]) -> None:
    root = open_store(fs.join(cfg.out, STORE_NAME), mode="r+")
    how = {"mode": "saved", "file": cfg.ccm} if cfg.ccm else {"mode": cfg.colour}
    for section, m in matrices.items():
        if section in root:
            root[section].attrs.update({"colour_calibration": {**how, **m.to_dict()}})


def saved_matrices(path: str, sections: list[str]) -> dict[str, ColourMatrix]:
    """The matrices of a ``ccm.json`` (``lode calibrate colour``) for ``sections``: its one matrix for
    every section (a ``series`` fit), else each section's own, by section id."""
    from engine.calibrate.colour import load_matrices

    saved = load_matrices(path)
    distinct = {json.dumps(m.to_dict(), sort_keys=True): m for m in saved.values()}
    if len(distinct) == 1:
        (only,) = distinct.values()
        return {s: only for s in sections}
    missing = [s for s in sections if s not in saved]
    if missing:
        raise LodeInputError(
            path, f"holds no colour matrix for section(s) {', '.join(missing)} (has {', '.join(saved)})"
        )
    return {s: saved[s] for s in sections}


def _prepare_store(
    cfg: SegmentOptions, card: ModelCard, sources: list[Source], layouts: dict[str, PyramidLayout], fresh: bool
) -> None:
    path = fs.join(cfg.out, STORE_NAME)
    root = open_store(path, mode="w" if fresh else "a")
    classes = card.class_set()
    for s in sources:
        lay = layouts[s.section]
        if s.section in root and not fresh:
            if layout_of(group_at(root, s.section)) != lay:
                raise LodeInputError(path, f"section {s.section} exists with another block layout; use a new --out")
            continue
        img = create_image(
            root,
            s.section,
            (s.channels, s.height, s.width),
            lay,
            channel_names=card.channels,
            pixel_size_um=s.pixel_size_um,
            overwrite=True,
            attributes={
                "model_id": card.model_id,
                "source": {"path": s.path, "group": s.group},
                "complete": False,
                **_carried(s),
            },
        )
        create_labels(img, MINERALS, classes, lay, pixel_size_um=s.pixel_size_um, overwrite=True)
        if cfg.probabilities != "none":
            create_image(
                img,
                PROBABILITIES,
                (len(classes), s.height, s.width),
                PyramidLayout(lay.block, lay.chunk, 1),
                dtype=cfg.probabilities,
                channel_names=classes.names,
                pixel_size_um=s.pixel_size_um,
                overwrite=True,
                quantisation=(1 / 255, 0.0) if cfg.probabilities == "uint8" else None,
            )
    list_sections(root)
    root.attrs.update({"lode": {"model_id": card.model_id, "model_card": card.model_dump()}})


def _carried(src: Source) -> dict[str, Any]:
    """What a stitched source section hands on to its segmentation: its stitch report (frames placed,
    RMS, flagged frames, the lens and flat used, the pixel size)."""
    base = src if isinstance(src, SectionSource) else src.base
    report = base.stitch_report()
    return {} if report is None else {"stitch": report}


def _section_means(src: Source, annotation: str, gamma: float) -> dict:
    from engine.calibrate.colour import class_means
    from engine.io.images import read_mask

    src = getattr(src, "base", src)  # an XPL stack's PPL image: no need to warp its XPL captures here
    rgb = np.moveaxis(src.read(0, src.height, 0, src.width)[:3], 0, -1)
    return class_means(np.ascontiguousarray(rgb), read_mask(annotation, rgb.shape[:2]), gamma, source=annotation)


def colour_matrices(cfg: SegmentOptions, card: ModelCard, sources: list[Source]) -> dict[str, ColourMatrix]:
    """Fit the colour stage's matrices (Ray tasks read each annotated section): ``{section: ColourMatrix}``."""
    if cfg.ccm:
        if cfg.colour != "none":
            raise LodeInputError("--ccm", f"applies a saved matrix; it cannot be combined with --colour {cfg.colour}")
        return saved_matrices(cfg.ccm, [s.section for s in sources])
    if cfg.colour == "none":
        return {}
    if not card.reference_colors:
        raise LodeInputError(cfg.checkpoint, "model card carries no reference colours for --colour")
    if not cfg.annotations:
        raise LodeInputError("--annotations", f"--colour {cfg.colour} needs a folder of annotation masks")
    import ray

    from engine.calibrate.colour import fit_means, reference_from_card  # scipy.optimize: 0.6 s to import

    anns = {s.section: fs.join(cfg.annotations, f"{s.section}.png") for s in sources}
    annotated = [s for s in sources if fs.exists(anns[s.section])]
    missing = [anns[s.section] for s in sources if s not in annotated]
    if cfg.colour == "per-image" and missing:
        raise LodeInputError(missing[0], "annotation not found (per-image colour mode needs one per section)")
    if not annotated:
        if cfg.colour == "annotated":
            return {}
        raise LodeInputError(cfg.annotations, "no annotation matches any section")
    task = ray.remote(num_cpus=0.25, **fs.ray_remote_args())(_section_means)
    means = ray.get([task.remote(s, str(anns[s.section]), card.reference_gamma) for s in annotated])
    reference = reference_from_card(card.reference_colors)
    if cfg.colour == "series":
        m = fit_means(means, reference, card.reference_gamma, [str(anns[s.section]) for s in annotated])
        return {s.section: m for s in sources}
    return {
        s.section: fit_means([mm], reference, card.reference_gamma, [str(anns[s.section])])
        for s, mm in zip(annotated, means)
    }


def run_segmentation(cfg: SegmentOptions) -> dict[str, Any]:
    """Run (or resume) a segmentation job; returns the written manifest. Inputs, checkpoint and
    output may be local paths or fsspec URIs; workers get the object-store settings of this process."""
    from engine.runtime import init_ray

    t_start = time.perf_counter()
    card = check_checkpoint(cfg.checkpoint)
    p = plan(cfg, card)
    sources, layouts, window, overlap = p.sources, p.layouts, p.window, p.overlap
    manifest = RunManifest(cfg.records or cfg.out)
    manifest.check_writable()
    if cfg.records:
        RunManifest(cfg.out).check_writable()
    fingerprint = {
        "model_id": card.model_id,
        "window": window,
        "overlap": overlap,
        "probabilities": cfg.probabilities,
        "colour": cfg.colour,
        "ccm": cfg.ccm,
        "annotations": cfg.annotations,
        "xpl": cfg.xpl,
        "sections": {
            s.section: {"input": s.path + ("/" + s.group if s.group else ""), "layout": asdict(layouts[s.section])}
            for s in sources
        },
    }
    fresh = manifest.begin("segment", asdict(cfg), fingerprint, per_unit="sections")
    try:
        for section, exc in p.failed.items():
            manifest.mark_failed(section, "plan", str(exc))
        _prepare_store(cfg, card, sources, layouts, fresh)

        units = [Unit(s.section, b) for s in sources for b in block_grid(s.height, s.width, layouts[s.section].block)]
        expected = [u.key for u in units]
        pending = len(units) - len(manifest.done_keys() & set(expected))
        log.info(
            "segment: %d sections, %d blocks to run, %d already done, %d sections not plannable",
            len(sources),
            pending,
            len(units) - pending,
            len(p.failed),
        )

        t_ray = time.perf_counter()
        matrices: dict[str, ColourMatrix] = {}
        if pending:
            init_ray()
            matrices = colour_matrices(cfg, card, sources)
            if matrices:
                _record_colour(cfg, matrices)
        stage = SegmentStage(
            {s.section: s for s in sources},
            _absolute(cfg.out),
            _absolute(cfg.checkpoint),
            window,
            overlap,
            cfg.batch_size,
            cfg.probabilities,
            cfg.threads,
            cfg.copy_image,
            matrices,
        )
        # with nothing pending this only marks complete the sections a killed run finished but never marked
        run = run_stage(
            stage,
            units,
            manifest,
            RunOptions(
                device=cfg.device,
                actors=cfg.num_actors,
                max_units=cfg.max_blocks,
                remote_args=fs.ray_remote_args(),
                read_in_compute=not cfg.read_ahead,
            ),
        )
        skipped = run.skipped
    except BaseException as exc:
        manifest.abort(exc)
        raise
    timings = {
        "plan_s": t_ray - t_start,
        "pipeline_s": time.perf_counter() - t_ray,
        "total_s": time.perf_counter() - t_start,
    }
    doc = manifest.finish(timings, expected=expected + [f"{k}/plan" for k in p.failed], skipped=skipped)
    if doc["failed_sections"]:
        section, reason = next(iter(doc["failed_sections"].items()))
        where = {s.section: f"{s.path}/{s.group}" if s.group else s.path for s in sources}
        where.update({k: exc.source for k, exc in p.failed.items()})
        others = len({s.section for s in sources} - set(doc["failed_sections"]))
        raise LodeInputError(
            where[section],
            f"section {section} failed ({reason}); {len(doc['failed_sections']) - 1} "
            f"other section(s) failed, {others} unaffected: see {manifest.path}",
        )
    return doc


def _absolute(path: str) -> str:
    return path if fs.is_uri(path) else str(Path(fs.local(path)).resolve())
