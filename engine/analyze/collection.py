"""``lode analyze``: grain table, statistics and report of every section in a segmentation store."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.analyze.grains import (
    GrainStage,
    ZarrSource,
    finish_grain_table,
    grain_lut_for,
    merge_blocks,
    read_block_results,
)
from engine.analyze.quality import quality_table
from engine.analyze.sections import Section, open_sections
from engine.analyze.statistics import load_densities, measured_section, statistics_table
from engine.classes import ClassSet, MineralClass
from engine.errors import LodeInputError
from engine.io import fs
from engine.io.atomic import atomic_path
from engine.io.layout import FULL_RESOLUTION, MINERALS
from engine.io.manifest import RunManifest
from engine.raster import Unit, block_grid, units_of
from engine.raster.runner import RunOptions, run_stage

log = logging.getLogger(__name__)
DEFAULT_BLOCK = (2048, 2048)
WORK = ".grains-work"


@dataclass
class AnalysisResult:
    """Where the outputs went: local paths, or URIs for an object-store output."""

    grains_path: Path | str
    statistics_path: Path | str
    report_path: Path | str | None
    quality_path: Path | str
    timings: dict[str, float] = field(default_factory=dict)
    blocks: dict[str, int] = field(default_factory=dict)
    incomplete: dict[str, int] = field(default_factory=dict)
    """Section → label blocks never written, left out (only with ``allow_incomplete``)."""


def write_parquet_atomic(df: pd.DataFrame, schema: pa.Schema, path: str | Path) -> None:
    """Write ``df`` as Parquet with ``schema`` through the location's pyarrow filesystem: locally
    under a temporary name, then renamed; on an object store as one upload, which appears whole."""
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    if fs.is_uri(path):
        filesystem, inner = fs.arrow_filesystem(path)
        pq.write_table(table, inner, filesystem=filesystem)
        return
    with atomic_path(fs.local(path)) as tmp:
        pq.write_table(table, tmp)


def _location(path: str) -> Path | str:
    return path if fs.is_uri(path) else Path(path)


def block_of(section: Section) -> tuple[int, int]:
    arr = section.level0
    shards = getattr(arr, "shards", None)
    return tuple(shards) if shards else tuple(arr.chunks) if arr.chunks[0] >= 256 else DEFAULT_BLOCK  # type: ignore[return-value]


def union_classes(sections: Sequence[Section]) -> ClassSet:
    by_code: dict[int, MineralClass] = {}
    for s in sections:
        for c in s.classes.classes:
            by_code.setdefault(c.code, c)
    return ClassSet(tuple(by_code[k] for k in sorted(by_code)), name=sections[0].classes.name)


@dataclass
class GrainPass:
    """The grain pass over some sections of a store: each section's grain table (µm columns when
    its pixel size is known) and measures, in store order."""

    sections: list[Section]
    classes: ClassSet
    grain_codes: list[int]
    tables: list[pd.DataFrame]
    measured: list[tuple[str, Any]]
    ran: int
    skipped: int
    timings: dict[str, float] = field(default_factory=dict)

    def grain_table(self) -> pd.DataFrame:
        """These sections' rows of ``grains.parquet``, typed as that file holds them."""
        from schemas.tables import GRAINS_SCHEMA

        df = pd.concat(self.tables, ignore_index=True)
        return pa.Table.from_pandas(df, schema=GRAINS_SCHEMA, preserve_index=False).to_pandas()


def _places(store: str | Path, out_dir: str | Path | None) -> tuple[str, str]:
    """The store's absolute location and the output folder (made when local; default: beside the store)."""
    store = str(store) if fs.is_uri(store) else str(Path(fs.local(store)).resolve())
    out = str(out_dir) if out_dir else fs.parent(store)
    if not fs.is_uri(out):
        out = fs.local(out)
        Path(out).mkdir(parents=True, exist_ok=True)
    return store, out


def measure_grains(
    store: str | Path,
    out_dir: str | Path | None = None,
    *,
    executor: str = "serial",
    connectivity: int = 2,
    non_grain: Sequence[int] = (0,),
    pixel_size_um: float | None = None,
    block: tuple[int, int] | None = None,
    label_name: str = MINERALS,
    allow_incomplete: bool = False,
    sections: Sequence[str] | None = None,
) -> GrainPass:
    """Label and measure the grains of ``store``'s sections (``sections``: just these) block by block
    on the raster runner. Each block's result is kept in ``out/.grains-work`` until
    :func:`analyze_store` has written the tables, so a later pass over more sections, or a rerun after a
    kill, measures only the blocks not done yet."""
    store, out = _places(store, out_dir)
    opened = open_sections(store, label_name, allow_incomplete, only=sections)
    classes = union_classes(opened)
    lut = grain_lut_for(classes.codes, non_grain)
    timings: dict[str, float] = {}
    blocks = {s.name: block or block_of(s) for s in opened}
    units = {s.name: units_of(s.name, block_grid(*s.shape, blocks[s.name])) for s in opened}
    work = fs.join(out, WORK)
    t0 = time.perf_counter()
    run = _run_blocks(store, opened, units, work, lut, connectivity, executor, label_name)
    timings["blocks"] = time.perf_counter() - t0
    log.info("grain blocks: %d run, %d already done, %.1f s", run.ran, run.skipped, timings["blocks"])
    tables, measured = [], []
    for s in opened:
        t0 = time.perf_counter()
        df, tally = merge_blocks(read_block_results(work, units[s.name]), s.shape, blocks[s.name], connectivity)
        px = pixel_size_um or s.pixel_size_um
        tables.append(finish_grain_table(df, s.name, {c.code: c.name for c in classes.classes}, px))
        measured.append((s.name, measured_section(df, tally, px)))
        timings[f"grains:{s.name}"] = time.perf_counter() - t0
        log.info("section %s: %d grains", s.name, len(df))
    grain_codes = [c for c in classes.codes if lut[c]]
    return GrainPass(opened, classes, grain_codes, tables, measured, run.ran, run.skipped, timings)


def analyze_store(
    store: str | Path,
    out_dir: str | Path | None = None,
    *,
    executor: str = "serial",
    connectivity: int = 2,
    non_grain: Sequence[int] = (0,),
    densities: str | Path | None = None,
    size_edges: Sequence[float] | None = None,
    pixel_size_um: float | None = None,
    block: tuple[int, int] | None = None,
    report: bool = True,
    label_name: str = MINERALS,
    allow_incomplete: bool = False,
    sections: Sequence[str] | None = None,
) -> AnalysisResult:
    """Measure every section of ``store`` (``sections``: just these) and write grains.parquet,
    statistics.parquet, quality.parquet and report.html.

    quality.parquet always has one row per section, null where a section carries no stitch or colour
    record (:func:`~engine.analyze.quality.quality_table`).

    An incomplete section (a killed or failed segmentation) is refused unless ``allow_incomplete``;
    then only its written blocks are measured (unwritten pixels are void: no grain, no area)."""
    from schemas.tables import GRAINS_SCHEMA, QUALITY_SCHEMA, STATISTICS_SCHEMA

    if pixel_size_um is not None and not (pixel_size_um > 0 and np.isfinite(pixel_size_um)):
        raise LodeInputError("--pixel-size-um", f"must be a positive number of micrometres, got {pixel_size_um}")
    store, out = _places(store, out_dir)
    dens = load_densities(densities)
    g = measure_grains(
        store,
        out,
        executor=executor,
        connectivity=connectivity,
        non_grain=non_grain,
        pixel_size_um=pixel_size_um,
        block=block,
        label_name=label_name,
        allow_incomplete=allow_incomplete,
        sections=sections,
    )
    timings = dict(g.timings)
    t0 = time.perf_counter()
    grains = pd.concat(g.tables, ignore_index=True)
    stats = statistics_table(g.measured, g.classes, g.grain_codes, dens, size_edges)
    gp, sp, qp = (fs.join(out, f"{name}.parquet") for name in ("grains", "statistics", "quality"))
    write_parquet_atomic(grains, GRAINS_SCHEMA, gp)
    write_parquet_atomic(stats, STATISTICS_SCHEMA, sp)
    write_parquet_atomic(quality_table(g.sections), QUALITY_SCHEMA, qp)
    timings["statistics"] = time.perf_counter() - t0
    rp = None
    if report:
        from engine.analyze.report import write_report

        t0 = time.perf_counter()
        rp = write_report(gp, sp, out, sections=g.sections, classes=g.classes, quality_path=qp)
        timings["report"] = time.perf_counter() - t0
    fs.remove(fs.join(out, WORK))
    return AnalysisResult(
        _location(gp),
        _location(sp),
        _location(rp) if rp else None,
        _location(qp),
        timings,
        {"ran": g.ran, "skipped": g.skipped},
        {s.name: len(s.missing) for s in g.sections if s.missing},
    )


def _run_blocks(
    store: str,
    sections: Sequence[Section],
    units: dict[str, list[Unit]],
    work: str,
    lut: np.ndarray,
    connectivity: int,
    executor: str,
    label_name: str,
):
    """The grain pass over every block of ``sections`` on the raster runner, recorded (and resumed)
    in the run manifest under ``work``, where a pass over other sections of the same store joins; a
    run of other inputs or options left there is discarded."""
    manifest = RunManifest(work)
    fingerprint = {
        "store": store,
        "labels": label_name,
        "connectivity": connectivity,
        "grain_codes": np.nonzero(lut)[0].tolist(),
        "sections": {k: [[u.block.y0, u.block.x0, u.block.h, u.block.w] for u in us] for k, us in units.items()},
    }
    try:
        manifest.begin("analyze", {"executor": executor}, fingerprint, per_unit="sections")
    except LodeInputError:
        fs.remove(work)
        manifest.begin("analyze", {"executor": executor}, fingerprint, per_unit="sections")
    sources: dict[str, Any]
    if executor == "ray":
        sources = {s.name: ZarrSource(store, f"{s.labels.path}/{FULL_RESOLUTION}") for s in sections}
        options = RunOptions(executor="ray", remote_args=fs.ray_remote_args())
    elif executor == "serial":
        sources, options = {s.name: s.level0 for s in sections}, RunOptions(executor="serial")
    else:
        raise ValueError(f"unknown executor {executor!r} (serial or ray)")
    everything = [u for us in units.values() for u in us]
    run = run_stage(GrainStage(sources, work, lut, connectivity), everything, manifest, options)
    if run.failed:
        key, reason = next(iter(run.failed.items()))
        raise LodeInputError(f"{store}/{key.split('/')[0]}", f"grain block {key} failed: {reason}")
    return run
