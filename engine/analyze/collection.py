"""``lode analyze``: grain table, statistics and report of every section in a segmentation store."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.analyze.grains import ZarrSource, finish_grain_table, grain_lut_for, measure_labels
from engine.analyze.sections import Section, open_sections
from engine.analyze.statistics import Measured, load_densities, measured_section, statistics_table
from engine.classes import ClassSet
from engine.io import fs

log = logging.getLogger(__name__)
DEFAULT_BLOCK = (2048, 2048)


@dataclass
class AnalysisResult:
    """Where the outputs went: local paths, or URIs for an object-store output."""

    grains_path: Path | str
    statistics_path: Path | str
    report_path: Path | str | None
    timings: dict[str, float] = field(default_factory=dict)


def write_parquet_atomic(df: pd.DataFrame, schema: pa.Schema, path: str | Path) -> None:
    """Write ``df`` as Parquet with ``schema`` through the location's pyarrow filesystem: locally
    under a temporary name, then renamed; on an object store as one upload, which appears whole."""
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    if fs.is_uri(path):
        filesystem, inner = fs.arrow_filesystem(path)
        pq.write_table(table, inner, filesystem=filesystem)
        return
    path = Path(fs.local(path))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _location(path: str) -> Path | str:
    return path if fs.is_uri(path) else Path(path)


def block_of(section: Section) -> tuple[int, int]:
    arr = section.level0
    shards = getattr(arr, "shards", None)
    return tuple(shards) if shards else tuple(arr.chunks) if arr.chunks[0] >= 256 else DEFAULT_BLOCK  # type: ignore[return-value]


def union_classes(sections: Sequence[Section]) -> ClassSet:
    by_code = {}
    for s in sections:
        for c in s.classes.classes:
            by_code.setdefault(c.code, c)
    return ClassSet(tuple(by_code[k] for k in sorted(by_code)), name=sections[0].classes.name)


def analyze_store(store: str | Path, out_dir: str | Path | None = None, *, executor: str = "serial",
                  connectivity: int = 2, non_grain: Sequence[int] = (0,), densities: str | Path | None = None,
                  size_edges: Sequence[float] | None = None, pixel_size_um: float | None = None,
                  block: tuple[int, int] | None = None, report: bool = True,
                  label_name: str = "minerals") -> AnalysisResult:
    """Measure every section of ``store`` and write grains.parquet, statistics.parquet and report.html."""
    from schemas.tables import GRAINS_SCHEMA, STATISTICS_SCHEMA

    store = str(store) if fs.is_uri(store) else str(Path(fs.local(store)).resolve())
    out = str(out_dir) if out_dir else fs.parent(store)
    if not fs.is_uri(out):
        out = fs.local(out)
        Path(out).mkdir(parents=True, exist_ok=True)
    dens = load_densities(densities)
    sections = open_sections(store, label_name)
    classes = union_classes(sections)
    lut = grain_lut_for(classes.codes, non_grain)
    grain_codes = [c for c in classes.codes if lut[c]]
    timings: dict[str, float] = {}
    tables, measured = [], []
    for s in sections:
        t0 = time.perf_counter()
        arr = s.level0
        src = ZarrSource(store, f"{s.labels.path}/0") if executor == "ray" else arr
        df, tally = measure_labels(src, s.shape, block or block_of(s), lut, connectivity, executor)
        px = pixel_size_um or s.pixel_size_um
        tables.append(finish_grain_table(df, s.name, {c.code: c.name for c in classes.classes}, px))
        measured.append((s.name, measured_section(df, tally, px)))
        timings[f"grains:{s.name}"] = time.perf_counter() - t0
        log.info("section %s: %d grains in %.1f s", s.name, len(df), timings[f"grains:{s.name}"])
    t0 = time.perf_counter()
    grains = pd.concat(tables, ignore_index=True)
    stats = statistics_table(measured, classes, grain_codes, dens, size_edges)
    gp, sp = fs.join(out, "grains.parquet"), fs.join(out, "statistics.parquet")
    write_parquet_atomic(grains, GRAINS_SCHEMA, gp)
    write_parquet_atomic(stats, STATISTICS_SCHEMA, sp)
    timings["statistics"] = time.perf_counter() - t0
    rp = None
    if report:
        from engine.analyze.report import write_report

        t0 = time.perf_counter()
        rp = write_report(gp, sp, out, sections=sections, classes=classes)
        timings["report"] = time.perf_counter() - t0
    return AnalysisResult(_location(gp), _location(sp), _location(rp) if rp else None, timings)
