"""The grain pass on the raster runner: grains.parquet and statistics.parquet equal the tables the
old block pass wrote (pinned in fixtures/), with either executor, and a killed job resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from engine.analyze.collection import WORK, analyze_store, measure_grains

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]


# Units the statistics table gained after the tables were pinned (it had none for these rows).
UNITS_SINCE = {"area_fraction": "1", "liberation": "1", "weight_percent": "%", "grain_count": "count"}
# Statistics it gained after the tables were pinned.
STATISTICS_SINCE = {"density"}


def _same_tables(got: Path, pinned: Path) -> None:
    a, b = pq.read_table(got).to_pandas(), pq.read_table(pinned).to_pandas()
    if "statistic" in a:
        a = a[~a.statistic.isin(STATISTICS_SINCE)].reset_index(drop=True)
    if "unit" in b:
        added = b.statistic.map(UNITS_SINCE)
        assert b.unit[added.notna()].isna().all()
        b["unit"] = b.unit.where(added.isna(), added)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_serial_run_equals_pinned_tables(two_sections, tmp_path):
    store, _ = two_sections
    res = analyze_store(store, tmp_path, executor="serial", report=False)
    assert res.blocks == {"ran": 2 * 12, "skipped": 0}
    _same_tables(res.grains_path, FIXTURES / "two_sections_grains.parquet")
    _same_tables(res.statistics_path, FIXTURES / "two_sections_statistics.parquet")
    assert not (tmp_path / WORK).exists()


@pytest.mark.ray
def test_ray_run_equals_pinned_tables(two_sections, tmp_path, ray_session):
    store, _ = two_sections
    res = analyze_store(store, tmp_path, executor="ray", report=False)
    assert res.blocks == {"ran": 2 * 12, "skipped": 0}
    _same_tables(res.grains_path, FIXTURES / "two_sections_grains.parquet")
    _same_tables(res.statistics_path, FIXTURES / "two_sections_statistics.parquet")


@pytest.mark.ray
@pytest.mark.slow
def test_killed_job_resumes_with_identical_tables(two_sections, tmp_path):
    store, _ = two_sections
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "jobs.analyze", str(store), "--out", str(out), "--block", "64", "--no-report"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = out / WORK / "_status"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(status.glob("*/*.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(status.glob("*/*.json")))
    assert 0 < done < 96, "the run should have been killed part-way"
    assert not (out / "grains.parquet").exists()

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    blocks = json.loads(rerun.stdout[rerun.stdout.index("{") :])["blocks"]
    assert blocks["skipped"] >= done and blocks["ran"] + blocks["skipped"] == 96
    analyze_store(store, tmp_path / "ref", executor="serial", report=False, block=(64, 64))
    for name in ("grains.parquet", "statistics.parquet"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    _same_tables(out / "grains.parquet", FIXTURES / "two_sections_grains.parquet")
    _same_tables(out / "statistics.parquet", FIXTURES / "two_sections_statistics_b64.parquet")
    assert not (out / WORK).exists()


def test_a_pass_over_one_section_is_kept_for_the_tables_of_all(two_sections, tmp_path):
    """``lode run`` measures each section once it is segmented: the collection's tables then run only
    the other sections' blocks, and equal the pinned ones."""
    store, _ = two_sections
    first = measure_grains(store, tmp_path, sections=["s1"])
    assert (first.ran, first.skipped) == (12, 0) and [s.name for s in first.sections] == ["s1"]
    res = analyze_store(store, tmp_path, report=False)
    assert res.blocks == {"ran": 12, "skipped": 12}
    _same_tables(res.grains_path, FIXTURES / "two_sections_grains.parquet")
    _same_tables(res.statistics_path, FIXTURES / "two_sections_statistics.parquet")
    pd.testing.assert_frame_equal(first.grain_table(), pd.read_parquet(res.grains_path).query("section == 's1'"))
    assert not (tmp_path / WORK).exists()
