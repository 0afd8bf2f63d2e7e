"""quality.parquet and the report's Quality table hold what the store's sections carry: the stitch
report's frames, RMS and flagged frames, the colour calibration's ΔE2000 before and after the fit;
null (blank) where a section carries none (a matrix saved before ``mean_delta_e_before``, no record)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from engine.analyze.collection import analyze_store
from engine.calibrate.colour import fit_delta_e
from engine.io.layout import attrs_of
from engine.io.ome import open_store
from engine.synth.casts import random_cast
from schemas.tables import QUALITY_SCHEMA

from .synthetic_sections import place_grains, write_store

STITCH = {"frames_placed": 5, "frames_total": 6, "rms_px": 0.3172, "flagged": ["f03", "f05"], "pixel_size_um": 0.5}
OLD_COLOUR = {"mode": "saved", "file": "ccm.json", "matrix": np.eye(4, 3).tolist(), "gamma": 2.2}
OLD_COLOUR["info"] = {"method": "ciede2000", "mean_delta_e_fit": 0.7125}
NUMBERS = ("stitch_rms_px", "pixel_size_um", "delta_e_before", "delta_e_after")


class _QualityCells(HTMLParser):
    """The Quality table's cells: ``{section: {class: (data-value or None, text)}}``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, tuple[str | None, str]]] = {}
        self.tables = 0
        self._in = False
        self._row: str | None = None
        self._cell: tuple[str, str | None] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._in = "qc" in (a.get("class") or "").split()
            self.tables += self._in
        elif self._in and tag == "tr" and "data-section" in a:
            self._row = a["data-section"]
            self.rows[self._row] = {}
        elif self._row is not None and tag == "td" and a.get("class"):
            self._cell = (a["class"], a.get("data-value"))
            self.rows[self._row][a["class"]] = (a.get("data-value"), "")

    def handle_data(self, data):
        if self._cell is not None and self._row is not None:
            cls, value = self._cell
            self.rows[self._row][cls] = (value, self.rows[self._row][cls][1] + data)

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "table":
            self._in, self._row = False, None


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory):
    """Three small sections: s1 stitched and colour-calibrated now, s2 with a colour matrix saved by an
    older version (no ΔE before), s3 with no record."""
    rng = np.random.default_rng(21)
    ref = rng.uniform(0.03, 0.6, (8, 3))
    ccm = fit_delta_e(random_cast(rng, strength=1.0).apply_linear(ref), ref)
    labels = {f"s{i}": place_grains((192, 256), [1, 2, 5, 6, 8], 12, seed=30 + i).labels for i in (1, 2, 3)}
    store = write_store(tmp_path_factory.mktemp("store") / "seg.zarr", labels)
    root = open_store(store, mode="r+")
    lode = attrs_of(root["s1"])["lode"]
    root["s1"].attrs.update(
        {"lode": {**lode, "stitch": STITCH}, "colour_calibration": {"mode": "image", **ccm.to_dict()}}
    )
    root["s2"].attrs.update({"colour_calibration": OLD_COLOUR})
    res = analyze_store(store, tmp_path_factory.mktemp("out"))
    cells = _QualityCells()
    cells.feed(Path(res.report_path).read_text(encoding="utf-8"))
    return res, ccm, pq.read_table(res.quality_path), cells


def test_quality_parquet_holds_the_attributes(analysed):
    res, ccm, table, _ = analysed
    assert Path(res.quality_path).name == "quality.parquet"
    assert table.schema.equals(QUALITY_SCHEMA)
    assert table.schema.metadata[b"description"] == QUALITY_SCHEMA.metadata[b"description"]
    q = table.to_pandas().set_index("section")
    assert list(q.index) == ["s1", "s2", "s3"]
    s1 = q.loc["s1"]
    assert (s1.frames_placed, s1.frames_total, s1.flagged_frames) == (5, 6, 2)
    assert s1.stitch_rms_px == STITCH["rms_px"] and s1.pixel_size_um == STITCH["pixel_size_um"]
    assert s1.flagged == "f03, f05" and s1.colour_mode == "image"
    assert s1.delta_e_before == ccm.info["mean_delta_e_before"]
    assert s1.delta_e_after == ccm.info["mean_delta_e_fit"]
    assert s1.delta_e_before > s1.delta_e_after
    s2 = q.loc["s2"]
    assert s2.colour_mode == "saved" and s2.delta_e_after == OLD_COLOUR["info"]["mean_delta_e_fit"]
    assert s2.drop(["colour_mode", "delta_e_after"]).isna().all()
    assert q.loc["s3"].isna().all()


def test_quality_table_shows_the_parquet_rows(analysed):
    _, _, table, cells = analysed
    q = table.to_pandas().set_index("section")
    assert cells.tables == 1 and list(cells.rows) == list(q.index)
    for section, row in q.iterrows():
        shown = cells.rows[section]
        for column in NUMBERS:
            value, text = shown[column]
            if pd.isna(row[column]):
                assert value is None and text == ""
            else:
                assert float(value) == row[column] and float(text) == pytest.approx(row[column], abs=5e-3)
    s1 = cells.rows["s1"]
    assert s1["frames"][1] == "5/6" and s1["flagged"][1] == "f03, f05" and s1["colour_mode"][1] == "image"
    assert float(s1["delta_e_before"][0]) == q.loc["s1", "delta_e_before"]
    assert float(s1["stitch_rms_px"][0]) == STITCH["rms_px"]
    assert cells.rows["s2"]["delta_e_before"] == (None, "")
    assert all(text == "" for _, text in cells.rows["s3"].values())
