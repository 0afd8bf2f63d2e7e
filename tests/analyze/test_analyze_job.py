import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.errors import LodeInputError
from engine.io.ome import PyramidLayout, create_image, open_store
from jobs import analyze
from schemas.tables import GRAINS_SCHEMA, STATISTICS_SCHEMA


def _args(*argv: str):
    """The validated config ``run`` receives."""
    return analyze.JOB.validate(analyze.JOB.parser().parse_args(list(argv)))


def test_help_does_not_import_ray():
    code = (
        "import sys, argparse, jobs.analyze as m; p = argparse.ArgumentParser(); m.add_arguments(p); "
        "p.format_help(); print('ray' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert out.stdout.strip() == "False"


def test_job_writes_tables_with_schemas(two_sections, tmp_path):
    store, truth = two_sections
    assert analyze.run(_args(str(store), "--out", str(tmp_path), "--executor", "serial", "--no-report")) == 0
    grains = pq.read_table(tmp_path / "grains.parquet")
    stats = pq.read_table(tmp_path / "statistics.parquet")
    assert grains.schema.equals(GRAINS_SCHEMA, check_metadata=False)
    assert stats.schema.equals(STATISTICS_SCHEMA, check_metadata=False)
    assert grains.num_rows == sum(len(t.grains) for t in truth.values())
    assert not (tmp_path / "report.html").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_missing_store_is_reported(tmp_path, capsys):
    from jobs.cli import main as lode

    assert lode(["analyze", str(tmp_path / "nope.zarr"), "--executor", "serial"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.zarr: no such zarr store" in err[0]


def test_store_without_labels_is_an_input_error(tmp_path):
    from engine.analyze.sections import open_sections

    root = open_store(tmp_path / "s.zarr", mode="w")
    create_image(root, "a", (3, 64, 64), PyramidLayout((64, 64), 32, 1))
    with pytest.raises(LodeInputError, match="no section"):
        open_sections(tmp_path / "s.zarr")


def test_empty_section_and_unknown_pixel_size(tmp_path):
    from engine.analyze.collection import analyze_store

    from .synthetic_sections import write_store

    lab = np.zeros((130, 140), np.uint8)
    lab[10:20, 10:20] = 6
    store = write_store(
        tmp_path / "s.zarr", {"empty": np.zeros((64, 64), np.uint8), "one": lab}, pixel_size_um=None, block=64
    )
    res = analyze_store(store, tmp_path, report=True)
    grains = pq.read_table(res.grains_path).to_pandas()
    stats = pq.read_table(res.statistics_path).to_pandas()
    assert len(grains) == 1 and grains.area_px.item() == 100 and grains.area_um2.isna().all()
    # 10×10 square: 40 axis crossings, 4 × 19 diagonal ones
    assert grains.perimeter_px.item() == pytest.approx(np.pi / 8 * (40 + 76 / 2**0.5))
    assert grains.feret_max_px.item() == pytest.approx(200**0.5) and grains.feret_min_px.item() == 10
    counts = stats[(stats.statistic == "grain_count") & (stats.class_code == 6) & (stats.scope == "section")]
    assert counts.set_index("section").value.to_dict() == {"empty": 0, "one": 1}
    assert set(stats[stats.statistic == "mean_ecd"].unit) == {"px"}
    assert (tmp_path / "report.html").exists()
