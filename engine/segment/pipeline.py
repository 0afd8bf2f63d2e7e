"""The segmentation job as a Ray Data pipeline.

block descriptors → read block + halo, stage the block's image shards (CPU read tasks)
→ windows, model, blend (actor pool, GPU when the cluster has one) → whole-shard label
writes (Datasink). A block is recorded as done only after all its shards are written;
reruns skip done blocks.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from engine.errors import LodeInputError
from engine.io import fs
from engine.io.manifest import BlockStatus, RunManifest
from engine.io.ome import (PyramidLayout, create_image, create_labels, labels_of, layout_of, open_store,
                          write_block)
from engine.io.sources import SectionSource, discover
from engine.segment.card import ModelCard, read_card
from engine.tiling.grid import Block, PaddedGrid, auto_block, block_grid
from schemas.config import SegmentConfig

log = logging.getLogger("lode.segment")

STORE_NAME = "lode.ome.zarr"
LABELS = "minerals"
PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class BlockTask:
    source: SectionSource
    block: Block


def _table(row: dict[str, Any]):
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    cols = {}
    for k, v in row.items():
        if isinstance(v, np.ndarray):
            cols[k] = ArrowTensorArray.from_numpy(v[None])
        else:
            cols[k] = pa.array([v])
    return pa.table(cols)


def read_block(task: BlockTask, window: int, overlap: float, copy_to: str | None) -> dict[str, Any]:
    """Read a block plus the halo its windows need, interleaved ``(h, w, c)`` as the model
    actor cuts its windows (so the actor blends straight from the object store, without a
    copy); optionally stage the block's image shards into the output store (the block is
    only marked done once its labels are written too).

    Pixels that turn out unreadable only now (a corrupt chunk, an image that changed) do not
    fail the job: the row carries the error instead, and the block's section fails alone."""
    src, b = task.source, task.block
    y0, y1, x0, x1 = PaddedGrid(src.height, src.width, window, overlap).input_region(b)
    row = {"section": src.section, "key": b.key, "index": b.index, "y0": b.y0, "x0": b.x0, "h": b.h, "w": b.w,
           "ry0": y0, "rx0": x0, "height": src.height, "width": src.width, "error": ""}
    try:
        region = src.read(y0, y1, x0, x1)
        if region.shape[0] != src.channels:
            raise LodeInputError(src.path, f"expected {src.channels} channels, read {region.shape[0]}")
    except LodeInputError as exc:
        return {**row, "error": str(exc), "region": np.zeros((1, 1, src.channels), np.uint8)}
    if copy_to is not None:
        oy, ox = b.y0 - y0, b.x0 - x0
        write_block(_open_out(copy_to)[src.section], region[:, oy:oy + b.h, ox:ox + b.w], b.y0, b.x0, "image")
    return {**row, "region": np.ascontiguousarray(np.moveaxis(region, 0, -1))}


class BlockDatasource:
    """Ray Data source: one read task per pending block, yielding its pixels plus halo."""

    def __new__(cls, tasks: list[BlockTask], window: int, overlap: float, copy_to: str | None = None):
        from ray.data.datasource import Datasource, ReadTask
        from ray.data.block import BlockMetadata

        class _Source(Datasource):
            def estimate_inmemory_data_size(self) -> int:
                return sum(t.source.channels * (t.block.h + window) * (t.block.w + window) for t in tasks)

            def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
                out = []
                for t in tasks:
                    size = t.source.channels * (t.block.h + window) * (t.block.w + window)
                    meta = BlockMetadata(num_rows=1, size_bytes=size, input_files=None, exec_stats=None)
                    out.append(ReadTask(lambda t=t: [_table(read_block(t, window, overlap, copy_to))], meta,
                                        per_task_row_limit=per_task_row_limit))
                return out

            def get_name(self) -> str:
                return "PanoramaBlocks"

        return _Source()


class SegmentActor:
    """Holds the model on its device; turns a block's pixels into blended labels/probabilities."""

    def __init__(self, checkpoint: str, window: int, overlap: float, batch_size: int, device: str,
                 probabilities: str, threads: int | None):
        import torch

        from engine.segment.checkpoint import load_inference_model
        from engine.segment.predictor import BlockPredictor

        self.threads = (threads or os.cpu_count() or 1) if device == "cpu" else None
        if self.threads:
            torch.set_num_threads(self.threads)
        model, card = load_inference_model(checkpoint, window, device=device)
        self.card = card
        self.codes = np.array(card.class_set(checkpoint).codes, dtype=np.uint8)
        self.num_classes = len(self.codes)
        self.probabilities = probabilities
        self.predictor = BlockPredictor(model, card.mean, card.std, window, overlap, batch_size, device)
        self.predictor.warm_up()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.threads:
            import torch

            # Ray Data may call this from another thread than __init__; OpenMP's thread count is
            # per calling thread (Ray workers start with OMP_NUM_THREADS=1).
            torch.set_num_threads(self.threads)
        out = {k: batch[k] for k in ("section", "key", "index", "y0", "x0", "h", "w", "error")}
        if batch["error"][0]:
            return {**out, "labels": np.zeros((1, 1, 1), np.uint8), "windows": np.array([0]),
                    "seconds": np.array([0.0])}
        t0 = time.perf_counter()
        region = np.moveaxis(batch["region"][0], -1, 0)
        b = Block(int(batch["index"][0]), int(batch["y0"][0]), int(batch["x0"][0]), int(batch["h"][0]),
                  int(batch["w"][0]))
        ry0, rx0 = int(batch["ry0"][0]), int(batch["rx0"][0])
        before = self.predictor.windows_run
        idx, probs = self.predictor.predict(region, (ry0, rx0), (int(batch["height"][0]), int(batch["width"][0])),
                                            b, self.num_classes,
                                            None if self.probabilities == "none" else self.probabilities)
        out["labels"] = self.codes[idx][None]
        if probs is not None:
            out["probabilities"] = probs[None]
        out["windows"] = np.array([self.predictor.windows_run - before])
        out["seconds"] = np.array([time.perf_counter() - t0])
        return out


class ShardSink:
    """Ray Data sink writing whole shards of every pyramid level, then the block's status."""

    def __new__(cls, out: str):
        from ray.data.datasource import Datasink

        class _Sink(Datasink):
            def write(self, blocks: Iterable, ctx) -> list[str]:
                import pandas as pd  # noqa: F401  (Ray hands pandas or arrow blocks)
                from ray.data.block import BlockAccessor

                done = []
                store = _open_out(out)
                for blk in blocks:
                    for row in BlockAccessor.for_block(blk).iter_rows(public_row_format=False):
                        done.append(_write_row(store, out, dict(row)))
                return done

            def get_name(self) -> str:
                return "OmeZarrShards"

        return _Sink()


def _open_out(out: str):
    return open_store(fs.join(out, STORE_NAME), mode="r+")


def _write_row(store, out: str, row: dict[str, Any]) -> str:
    section, key = str(row["section"]), str(row["key"])
    y0, x0 = int(row["y0"]), int(row["x0"])
    if row.get("error"):
        RunManifest(out).mark_failed(section, key, str(row["error"]))
        return f"{section}/{key}"
    img = store[section]
    write_block(labels_of(img, LABELS), np.asarray(row["labels"]), y0, x0, "label")
    if row.get("probabilities") is not None:
        write_block(img[PROBABILITIES], np.asarray(row["probabilities"]), y0, x0, "image")
    status = BlockStatus(section=section, key=key, index=int(row["index"]), y0=y0, x0=x0, h=int(row["h"]),
                         w=int(row["w"]), windows=int(row["windows"]), seconds=float(row["seconds"]))
    RunManifest(out).mark_done(status)
    return f"{section}/{key}"


@dataclass
class Plan:
    """Sections that can run, their block layouts, and the sections that cannot be planned
    (``failed``: section id → the error naming its input)."""

    sources: list[SectionSource]
    layouts: dict[str, PyramidLayout]
    window: int
    overlap: float
    failed: dict[str, LodeInputError]


def plan(cfg: SegmentConfig, card: ModelCard) -> Plan:
    """Plan every section; one that cannot be planned fails alone unless none can be planned."""
    window = cfg.window or card.window
    overlap = card.overlap if cfg.overlap is None else cfg.overlap
    failed: dict[str, LodeInputError] = {}
    sources = []
    for s in discover(cfg.inputs, failed):
        try:
            if cfg.xpl:
                from engine.register.xpl import attach_xpl

                (s,) = attach_xpl([s], cfg.xpl, card.channels[3:])
            if s.channels != card.in_channels:
                raise LodeInputError(s.path, f"has {s.channels} channels; the model expects {card.in_channels} "
                                             f"({', '.join(card.channels)})")
        except LodeInputError as exc:
            failed[s.section] = exc
            continue
        sources.append(s)
    if not sources:
        raise next(iter(failed.values()))
    layouts = {}
    for s in sources:
        step = cfg.chunk * 2 ** (cfg.levels - 1) if cfg.chunk * 2 ** (cfg.levels - 1) <= 4096 else 2 ** (cfg.levels - 1)
        block = tuple(cfg.block) if cfg.block else auto_block(s.height, s.width, window, shard=max(step, 256))
        layouts[s.section] = PyramidLayout(block, chunk=cfg.chunk, levels=cfg.levels)  # type: ignore[arg-type]
    return Plan(sources, layouts, window, overlap, failed)


def _record_colour(cfg: SegmentConfig, matrices: dict[str, Any]) -> None:
    root = open_store(fs.join(cfg.out, STORE_NAME), mode="r+")
    for section, m in matrices.items():
        if section in root:
            root[section].attrs.update({"colour_calibration": {"mode": cfg.colour, **m.to_dict()}})


def _prepare_store(cfg: SegmentConfig, card: ModelCard, sources: list[SectionSource],
                   layouts: dict[str, PyramidLayout], fresh: bool) -> None:
    path = fs.join(cfg.out, STORE_NAME)
    root = open_store(path, mode="w" if fresh else "a")
    classes = card.class_set()
    for s in sources:
        lay = layouts[s.section]
        if s.section in root and not fresh:
            if layout_of(root[s.section]) != lay:
                raise LodeInputError(path, f"section {s.section} exists with another block layout; use a new --out")
            continue
        img = create_image(root, s.section, (s.channels, s.height, s.width), lay, channel_names=card.channels,
                           pixel_size_um=s.pixel_size_um, overwrite=True,
                           attributes={"model_id": card.model_id, "source": {"path": s.path, "group": s.group}})
        create_labels(img, LABELS, classes, lay, pixel_size_um=s.pixel_size_um, overwrite=True)
        if cfg.probabilities != "none":
            create_image(img, PROBABILITIES, (len(classes), s.height, s.width),
                         PyramidLayout(lay.block, lay.chunk, 1), dtype=cfg.probabilities,
                         channel_names=classes.names, pixel_size_um=s.pixel_size_um, overwrite=True,
                         attributes={"quantised": cfg.probabilities == "uint8"})
    root.attrs.update({"lode": {"model_id": card.model_id, "model_card": card.model_dump()}})


def _section_means(src: SectionSource, annotation: str, gamma: float) -> dict:
    from engine.calibrate.colour import class_means
    from engine.io.images import read_mask

    src = getattr(src, "base", src)  # an XPL stack's PPL image: no need to warp its XPL captures here
    rgb = np.moveaxis(src.read(0, src.height, 0, src.width)[:3], 0, -1)
    return class_means(np.ascontiguousarray(rgb), read_mask(annotation, rgb.shape[:2]), gamma, source=annotation)


def colour_matrices(cfg: SegmentConfig, card: ModelCard, sources: list[SectionSource]) -> dict[str, Any]:
    """Fit the colour stage's matrices (Ray tasks read each annotated section): ``{section: ColourMatrix}``."""
    import ray

    from engine.calibrate.colour import fit_means, reference_from_card

    if cfg.colour == "none":
        return {}
    if not card.reference_colors:
        raise LodeInputError(cfg.checkpoint, "model card carries no reference colours for --colour")
    if not cfg.annotations:
        raise LodeInputError("--annotations", f"--colour {cfg.colour} needs a folder of annotation masks")
    anns = {s.section: Path(cfg.annotations) / f"{s.section}.png" for s in sources}
    annotated = [s for s in sources if anns[s.section].is_file()]
    missing = [str(anns[s.section]) for s in sources if s not in annotated]
    if cfg.colour == "per-image" and missing:
        raise LodeInputError(missing[0], "annotation not found (per-image colour mode needs one per section)")
    if not annotated:
        raise LodeInputError(cfg.annotations, "no annotation matches any section")
    task = ray.remote(num_cpus=0.25, **fs.ray_remote_args())(_section_means)
    means = ray.get([task.remote(s, str(anns[s.section]), card.reference_gamma) for s in annotated])
    reference = reference_from_card(card.reference_colors)
    if cfg.colour == "series":
        m = fit_means(means, reference, card.reference_gamma, [str(anns[s.section]) for s in annotated])
        return {s.section: m for s in sources}
    return {s.section: fit_means([mm], reference, card.reference_gamma, [str(anns[s.section])])
            for s, mm in zip(annotated, means)}


def correct_colour(batch: dict[str, np.ndarray], matrices: dict[str, dict]) -> dict[str, np.ndarray]:
    """Pipeline stage: apply the section's colour matrix to the RGB channels of a block region."""
    from engine.calibrate.colour import ColourMatrix

    region = batch["region"][0]
    m = matrices.get(str(batch["section"][0]))
    if m is not None:
        region = region.copy()
        region[..., :3] = ColourMatrix.from_dict(m).apply(np.ascontiguousarray(region[..., :3]))
        batch["region"] = region[None]
    return batch


def run_segmentation(cfg: SegmentConfig) -> dict[str, Any]:
    """Run (or resume) a segmentation job; returns the written manifest. Inputs, checkpoint and
    output may be local paths or fsspec URIs; workers get the object-store settings of this process."""
    import ray

    from engine.runtime import has_gpu, init_ray

    t_start = time.perf_counter()
    card = read_card(cfg.checkpoint)
    p = plan(cfg, card)
    sources, layouts, window, overlap = p.sources, p.layouts, p.window, p.overlap
    manifest = RunManifest(cfg.out)
    manifest.check_writable()
    fingerprint = {"model_id": card.model_id, "window": window, "overlap": overlap,
                   "probabilities": cfg.probabilities, "colour": cfg.colour, "annotations": cfg.annotations,
                   "xpl": cfg.xpl,
                   "sections": {s.section: {"input": s.path + ("/" + s.group if s.group else ""),
                                            "layout": asdict(layouts[s.section])} for s in sources}}
    fresh = manifest.begin("segment", cfg.model_dump(), fingerprint, per_unit="sections")
    for section, exc in p.failed.items():
        manifest.mark_failed(section, "plan", str(exc))
    _prepare_store(cfg, card, sources, layouts, fresh)

    expected = [f"{s.section}/{b.key}" for s in sources for b in block_grid(s.height, s.width, layouts[s.section].block)]
    done = manifest.done_keys()
    tasks = [BlockTask(s, b) for s in sources for b in block_grid(s.height, s.width, layouts[s.section].block)
             if f"{s.section}/{b.key}" not in done]
    skipped = len(expected) - len(tasks)
    if cfg.max_blocks is not None:
        tasks = tasks[:cfg.max_blocks]
    log.info("segment: %d sections, %d blocks to run, %d already done, %d sections not plannable",
             len(sources), len(tasks), skipped, len(p.failed))

    t_ray = time.perf_counter()
    if tasks:
        init_ray()
        gpu = cfg.device == "cuda" or (cfg.device == "auto" and has_gpu())
        n_actors = cfg.num_actors or (int(ray.cluster_resources().get("GPU", 1)) if gpu else 1)
        device = "cuda" if gpu else "cpu"
        out_abs = _absolute(cfg.out)
        remote = fs.ray_remote_args()
        ds = ray.data.read_datasource(BlockDatasource(tasks, window, overlap, out_abs if cfg.copy_image else None),
                                      override_num_blocks=len(tasks), **remote)
        matrices = colour_matrices(cfg, card, sources)
        if matrices:
            _record_colour(cfg, matrices)
            ds = ds.map_batches(correct_colour, fn_kwargs={"matrices": {k: m.to_dict() for k, m in matrices.items()}},
                                batch_size=1, batch_format="numpy", num_cpus=0.25, **remote)
        ds = ds.map_batches(
            SegmentActor,
            fn_constructor_kwargs=dict(checkpoint=_absolute(cfg.checkpoint), window=window, overlap=overlap,
                                       batch_size=cfg.batch_size, device=device, probabilities=cfg.probabilities,
                                       threads=cfg.threads),
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            batch_size=1, batch_format="numpy", num_gpus=1 if gpu else 0, num_cpus=0.5 if not gpu else 1, **remote,
        )
        ds.write_datasink(ShardSink(out_abs), ray_remote_args=remote)
    timings = {"plan_s": t_ray - t_start, "pipeline_s": time.perf_counter() - t_ray,
               "total_s": time.perf_counter() - t_start}
    doc = manifest.finish(timings, expected=expected + [f"{k}/plan" for k in p.failed], skipped=skipped)
    if doc["failed_sections"]:
        section, reason = next(iter(doc["failed_sections"].items()))
        where = {s.section: f"{s.path}/{s.group}" if s.group else s.path for s in sources}
        where.update({k: exc.source for k, exc in p.failed.items()})
        others = len({s.section for s in sources} - set(doc["failed_sections"]))
        raise LodeInputError(where[section], f"section {section} failed ({reason}); {len(doc['failed_sections']) - 1} "
                                             f"other section(s) failed, {others} unaffected: see {manifest.path}")
    return doc


def _absolute(path: str) -> str:
    return path if fs.is_uri(path) else str(Path(fs.local(path)).resolve())
