"""``lode run``: a collection from raw captures to its tables in one job, equal to the chain of the
individual jobs run by hand; a section that fails does so alone, and the rerun completes it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from engine.io.layout import STORE_NAME, label_path
from engine.synth.captures import CaptureConfig, calibration_frames, capture_grid, write_calibration, write_section
from jobs import run as run_job_module
from jobs.contract import parse, run_job
from tests.cluster_utils import kill_session

pytestmark = pytest.mark.ray
SECTIONS = ("secA", "secB", "secC")
PIXEL_UM = 0.8


def _lode(module, *argv: str) -> int:
    return run_job(module.JOB, parse(module.JOB, [str(a) for a in argv]))


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """Three sections of 2×2 degraded frames (lens, vignetting, drift, noise, JPEG), the collection's
    raw calibration frames and its pixel size."""
    root = tmp_path_factory.mktemp("run") / "coll"
    for i, name in enumerate(SECTIONS):
        caps = capture_grid(None, CaptureConfig.degraded(frame_hw=(160, 240), seed=41 + i, rows=2, cols=2))
        write_section(root, name, caps)
    write_calibration(root, calibration_frames(CaptureConfig.degraded(frame_hw=(160, 240), seed=41)))
    (root / "calibration" / "pixel_size.json").write_text(json.dumps({"pixel_size_um": PIXEL_UM}))
    return root


@pytest.fixture(scope="module")
def whole(ray_session, collection, tiny_checkpoint) -> Path:
    out = collection.parent / "whole"
    assert _lode(run_job_module, collection, "--model", tiny_checkpoint, "--out", out, "--shard", "256") == 0
    return out


def _same_store(a: Path, b: Path) -> None:
    ra, rb = zarr.open_group(str(a / STORE_NAME), mode="r"), zarr.open_group(str(b / STORE_NAME), mode="r")
    for name in SECTIONS:
        for path in (f"{name}/0", label_path(name), label_path(name, k=1)):
            assert np.array_equal(ra[path][:], rb[path][:]), path
    for table in ("grains.parquet", "statistics.parquet", "quality.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / table), pd.read_parquet(b / table))
    exports = sorted(p.name for p in (a / "exports").iterdir())
    assert exports == sorted(p.name for p in (b / "exports").iterdir()) and len(exports) == 2 * len(SECTIONS)
    for name in exports:  # the OME-XML's UUID is new for every file written
        same = (re.sub(rb'UUID="urn:uuid:[0-9a-f-]+"', b"", (d / "exports" / name).read_bytes()) for d in (a, b))
        assert next(same) == next(same), name


def test_lode_run_equals_the_chain_of_jobs(whole, collection, tiny_checkpoint, tmp_path):
    from jobs import analyze, segment, stitch

    panoramas = tmp_path / "panoramas.zarr"
    assert _lode(stitch, collection, "--out", panoramas, "--shard", "256") == 0
    assert _lode(segment, panoramas, "--model", tiny_checkpoint, "--out", tmp_path) == 0
    assert _lode(analyze, tmp_path / STORE_NAME, "--out", tmp_path) == 0
    _same_store(whole, tmp_path)

    manifest = json.loads((whole / "manifest.json").read_text())
    assert manifest["job"] == "run" and manifest["status"] == "complete"
    for name in SECTIONS:
        unit = manifest["units"][name]
        assert [unit[s]["status"] for s in ("stitch", "segment", "analyze")] == ["done"] * 3
        assert unit["stitch"]["frames_placed"] == 4


def test_lode_run_carries_the_pixel_size_and_the_stitch_record(whole, tiny_checkpoint):
    from engine.segment.card import check_checkpoint

    root = zarr.open_group(str(whole / STORE_NAME), mode="r")
    grains = pd.read_parquet(whole / "grains.parquet")
    assert set(grains["section"]) == set(SECTIONS)
    np.testing.assert_allclose(grains["area_um2"], grains["area_px"] * PIXEL_UM**2)
    np.testing.assert_allclose(grains["ecd_um"], grains["ecd_px"] * PIXEL_UM)
    for name in SECTIONS:
        for node in (root[name], root[f"{name}/labels/minerals"]):
            ms = node.attrs["ome"]["multiscales"][0]
            assert [a.get("unit") for a in ms["axes"] if a["type"] == "space"] == ["micrometer"] * 2
            assert ms["datasets"][0]["coordinateTransformations"][0]["scale"][-1] == PIXEL_UM
        lode = root[name].attrs["lode"]
        assert lode["model_id"] == check_checkpoint(tiny_checkpoint).model_id
        stitch = lode["stitch"]
        assert stitch["frames_placed"] == 4 and stitch["pixel_size_um"] == PIXEL_UM
        assert stitch["correction"]["flat"] is True
        assert stitch["correction"]["lens"]["dist_coeffs"][0] < -0.02  # the barrel lens fitted from checkerboards
    report = (whole / "report.html").read_text()
    for name in SECTIONS:
        stitch = root[name].attrs["lode"]["stitch"]
        row = re.search(rf'<tr data-section="{name}">(.*?)</tr>', report).group(1)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[:5] == [name, "4/4", f"{stitch['rms_px']:.3f}", "none", f"{PIXEL_UM:g}"]


def test_lode_run_fits_colour_for_annotated_sections_or_applies_a_saved_ccm(tmp_path, tiny_checkpoint):
    from engine.errors import LodeInputError

    coll = tmp_path / "coll"
    (coll / "secA").mkdir(parents=True)

    def options(*extra: str):
        argv = [str(coll), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "out"), *extra]
        return run_job_module.segment_options(parse(run_job_module.JOB, argv), ["p/secA"], "rec")

    assert (options().colour, options().annotations) == ("none", None)
    (coll / "annotations").mkdir()
    assert (options().colour, options().annotations) == ("annotated", str(coll / "annotations"))
    assert (options("--annotations", str(tmp_path)).annotations) == str(tmp_path)
    saved = options("--ccm", str(tmp_path / "ccm.json"))
    assert (saved.colour, saved.annotations, saved.ccm) == ("none", None, str(tmp_path / "ccm.json"))
    with pytest.raises(LodeInputError, match=re.escape(str(tmp_path))):
        options("--ccm", str(tmp_path / "ccm.json"), "--annotations", str(tmp_path))


@pytest.mark.slow  # 62 s: two more runs; failing alone is also covered per stage (test_fault_tolerance, stitch)
def test_a_failed_section_fails_alone_and_the_rerun_completes_it(whole, collection, tiny_checkpoint, tmp_path, capsys):
    coll = tmp_path / "coll"
    shutil.copytree(collection, coll)
    tile = sorted((coll / "secB" / "tiles").iterdir())[1]
    good = tile.read_bytes()
    tile.write_bytes(good[: len(good) // 3])
    out = tmp_path / "out"
    assert _lode(run_job_module, coll, "--model", tiny_checkpoint, "--out", out, "--shard", "256") == 2
    assert "secB" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "partial"
    assert manifest["units"]["secB"]["stitch"]["status"] == "failed"
    assert tile.name in manifest["units"]["secB"]["stitch"]["reason"]
    assert sorted(pd.read_parquet(out / "grains.parquet")["section"].unique()) == ["secA", "secC"]
    for name in ("secA", "secC"):
        assert manifest["units"][name]["analyze"]["status"] == "done"

    status = out / ".lode-run" / "segment" / "_status"
    before = {p: p.stat().st_mtime_ns for p in status.glob("*/*.json")}
    assert {p.parent.name for p in before} == {"secA", "secC"}
    tile.write_bytes(good)
    assert _lode(run_job_module, coll, "--model", tiny_checkpoint, "--out", out, "--shard", "256") == 0
    lines: dict[str, str] = {}  # each section's first line: the stitching stage's
    for ln in capsys.readouterr().out.splitlines():
        lines.setdefault(ln.split(":")[0], ln)
    assert "(stitched before)" in lines["secA"] and "(stitched before)" not in lines["secB"]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # secA's and secC's blocks not run again
    assert {p.parent.name for p in status.glob("*/*.json")} == set(SECTIONS)
    _same_store(whole, out)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def _stitched(out: Path) -> int:
    path = out / ".lode-run" / "panoramas.zarr.manifest.json"
    try:
        units = json.loads(path.read_text()).get("units") or {}
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(u.get("status") == "done" for u in units.values())


def _segmented(out: Path) -> int:
    return len(list((out / ".lode-run" / "segment" / "_status").glob("*/*.json")))


KILL_WHEN = {
    "stitching": lambda out: _stitched(out) >= 1,
    "segmentation": lambda out: _segmented(out) >= 1,
    "analysis": lambda out: _segmented(out) == len(SECTIONS) and (out / ".grains-work").exists(),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(KILL_WHEN))
def test_lode_run_killed_during_a_stage_resumes_byte_identical(whole, collection, tiny_checkpoint, tmp_path, stage):
    import os
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "out"
    argv = [str(collection), "--model", str(tiny_checkpoint), "--out", str(out), "--shard", "256"]
    env = {**os.environ, "PYTHONPATH": str(root), "RAY_AUTH_MODE": "disabled", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.run", *argv],
        cwd=root,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not KILL_WHEN[stage](out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        kill_session(proc)
    assert proc.returncode != 0, f"the run ended before it was killed: {proc.stderr.read()[-2000:]}"
    assert not (out / "grains.parquet").exists()
    segmented = _segmented(out)
    assert {
        "stitching": _stitched(out) < len(SECTIONS),
        "segmentation": 0 < segmented < len(SECTIONS),
        "analysis": segmented == len(SECTIONS),
    }[stage], "killed in another stage"

    assert _lode(run_job_module, *argv) == 0
    _same_store(whole, out)
    for table in ("grains.parquet", "statistics.parquet", "quality.parquet"):
        assert (out / table).read_bytes() == (whole / table).read_bytes()
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_lode_run_on_three_nodes_with_s3_equals_the_local_run(whole, collection, tiny_checkpoint, s3, tmp_path):
    """A head and two worker nodes of one CPU each (own processes, temp dir and ports), inputs and outputs
    only on S3 (moto's server): ``lode run`` completes, its work spread over the nodes, and its labels
    and tables equal the local run's."""
    import subprocess
    import sys

    import s3fs

    from tests.cluster_utils import RAY, cluster_env, local_cluster

    bucket = s3fs.S3FileSystem()
    bucket.put(str(collection), "lode-test/coll", recursive=True)
    bucket.put_file(str(tiny_checkpoint), "lode-test/model/tiny.pt")
    root = Path(__file__).resolve().parents[2]
    argv = ["s3://lode-test/coll", "--model", "s3://lode-test/model/tiny.pt", "--out", "s3://lode-test/run"]
    with local_cluster(num_cpus=1, workers=2) as (dashboard, gcs):
        env = {**cluster_env(), "PYTHONPATH": str(root), "RAY_ADDRESS": gcs}
        r = subprocess.run(
            [sys.executable, "-m", "jobs.run", *argv, "--shard", "256"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        tasks = subprocess.run(
            [RAY, "list", "tasks", "--address", dashboard, "--format", "json", "--limit", "10000", "--detail"],
            env=cluster_env(),
            capture_output=True,
            text=True,
            check=True,
        )
    assert len({t["node_id"] for t in json.loads(tasks.stdout) if t.get("node_id")}) == 3
    local = tmp_path / "from-s3"
    bucket.get("lode-test/run/", str(local), recursive=True)
    _same_store(whole, local)
    assert json.loads((local / "manifest.json").read_text())["status"] == "complete"
