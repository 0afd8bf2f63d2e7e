"""Every job through ``ray job submit --working-dir .`` on a private local head, on tiny inputs,
each checked against what it must have written. One head (the session's ``ray_head``) serves all submissions.

Slow (several minutes): the default suite keeps the segment submission (test_job_submit.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.cluster_utils import RAY, cluster_env

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head(ray_head):
    return ray_head


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("submit")


def submit(address: str, *argv: str) -> str:
    r = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            address,
            "--runtime-env",
            str(ROOT / "cluster/runtime_env.yaml"),
            "--working-dir",
            str(ROOT),
            "--",
            "python",
            "-m",
            *argv,
        ],
        env=cluster_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = r.stdout + r.stderr
    assert r.returncode == 0 and "succeeded" in log.lower(), log[-4000:]
    return log


def test_synth_collection_and_panorama(head, work):
    submit(head, "jobs.synth", "collection", str(work / "ds"), "--train", "2", "--test", "1", "--size", "160", "192")
    for split, n in (("train", 2), ("test", 1)):
        assert len(list((work / "ds" / "imgs" / split).glob("*"))) == n
        assert len(list((work / "ds" / "masks" / split).glob("*.png"))) == n
    submit(
        head,
        "jobs.synth",
        "panorama",
        str(work / "pano.zarr"),
        "--section",
        "s1",
        "--size",
        "256",
        "320",
        "--block",
        "128",
    )
    img = zarr.open_group(str(work / "pano.zarr"), mode="r")["s1/0"]
    assert img.shape == (3, 256, 320)


def test_train(head, work):
    submit(
        head,
        "jobs.train",
        str(work / "ds"),
        "--out",
        str(work / "model"),
        "--steps",
        "2",
        "--patch",
        "64",
        "--batch-size",
        "2",
        "--window",
        "128",
        "--arch",
        "unet",
    )
    from engine.segment.checkpoint import load_checkpoint

    _, card = load_checkpoint(work / "model" / "model.pt")
    assert card.window == 128 and card.arch == "unet"
    assert json.loads((work / "model" / "manifest.json").read_text())["status"] == "complete"


def test_segment_analyze_annotate(head, work):
    seg = work / "seg"
    submit(
        head,
        "jobs.segment",
        str(work / "pano.zarr"),
        "--checkpoint",
        str(work / "model" / "model.pt"),
        "--out",
        str(seg),
        "--block",
        "128",
        "128",
        "--probabilities",
        "uint8",
    )
    manifest = json.loads((seg / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["blocks"]) == 6
    submit(head, "jobs.analyze", str(seg / "lode.ome.zarr"), "--out", str(work / "analysis"), "--no-report")
    import pyarrow.parquet as pq

    grains = pq.read_table(work / "analysis" / "grains.parquet").to_pandas()
    labels = zarr.open_group(str(seg / "lode.ome.zarr"), mode="r")["s1/labels/minerals/0"][:]
    counts = np.bincount(labels.ravel(), minlength=256)
    for code, area in grains.groupby("class_code")["area_px"].sum().items():
        assert area == counts[code], code
    assert set(grains["class_code"]) == set(np.flatnonzero(counts)) - {0}
    submit(
        head,
        "jobs.annotate",
        "uncertain",
        str(seg / "lode.ome.zarr"),
        "--out",
        str(work / "uncertain"),
        "--share",
        "0.1",
    )
    doc = json.loads((work / "uncertain" / "uncertain_s1.json").read_text())
    assert 0 < doc["share"] <= 0.1 and doc["regions"]


def test_stitch_and_calibrate(head, work):
    from engine.synth.captures import CaptureConfig, calibration_frames, capture_grid, write_calibration, write_section

    cfg = CaptureConfig(frame_hw=(160, 220), seed=51, rows=2, cols=2)
    write_section(work / "captures", "secA", capture_grid(None, cfg))
    submit(
        head,
        "jobs.stitch",
        str(work / "captures"),
        "--out",
        str(work / "stitched.zarr"),
        "--no-lens",
        "--no-flat",
        "--shard",
        "256",
    )
    manifest = json.loads((work / "stitched.zarr.manifest.json").read_text())
    assert manifest["units"]["secA"] == {**manifest["units"]["secA"], "status": "done", "frames_placed": 4}
    assert manifest["units"]["secA"]["rms_px"] < 0.5
    cal = write_calibration(
        work / "cal",
        calibration_frames(CaptureConfig.degraded(frame_hw=(160, 220), seed=52), n_views=2, n_flat=4, n_dark=2),
    )
    submit(
        head, "jobs.calibrate", "flat", str(cal / "flat"), "--dark", str(cal / "dark"), "--out", str(work / "flat.npz")
    )
    with np.load(work / "flat.npz") as z:
        assert abs(float(z["flat"][80, 110].mean()) - 1.0) < 0.02 and float(z["flat"][0, 0].mean()) < 0.9


def test_lineaments(head, work):
    from engine.geophys.dataset import write_survey_files

    grid = write_survey_files(work / "surveys", 1, size=128)[0]
    submit(head, "jobs.lineaments", str(grid), "--method", "classical", "--out", str(work / "lineaments"))
    summary = json.loads((work / "lineaments" / "summary.json").read_text())
    lines = json.loads((work / "lineaments" / "lineaments.geojson").read_text())["features"]
    assert summary["lines"] == len(lines) > 0 and summary["shape"] == [128, 128]


def test_prospect(head, work):
    from engine.prospect.synth import synth_region, write_region

    region = write_region(synth_region(96, 3), work / "region")
    submit(head, "jobs.prospect", "stack", "--spec", str(region / "layers.json"), "--out", str(work / "stack.zarr"))
    submit(
        head,
        "jobs.prospect",
        "map",
        "--stack",
        str(work / "stack.zarr"),
        "--method",
        "pca",
        "--block",
        "64",
        "--out",
        str(work / "map.zarr"),
    )
    from engine.prospect.score import read_score

    score = np.asarray(read_score(work / "map.zarr"))
    assert score.shape == (96, 96) and np.isfinite(score).mean() > 0.5


def test_bench_and_config(head, work):
    submit(
        head,
        "jobs.bench",
        "--only",
        "lineaments",
        "--out",
        str(work / "bench"),
        "--args",
        "lineaments=--n 1 --size 128",
    )
    report = (work / "bench" / "BENCHMARKS.md").read_text()
    assert "| lineaments | F1 at 2 cells, classical |" in report
    log = submit(head, "jobs.config", "schema", "segment")
    assert '"checkpoint"' in log


def test_run(head, work):
    """``lode run`` through ``ray job submit``: raw captures with the collection's calibration to tables."""
    from engine.synth.captures import CaptureConfig, calibration_frames, capture_grid, write_calibration, write_section

    coll = work / "run-captures"
    for i, name in enumerate(("secA", "secB")):
        cfg = CaptureConfig.degraded(frame_hw=(160, 240), seed=61 + i, rows=2, cols=2)
        write_section(coll, name, capture_grid(None, cfg))
    write_calibration(coll, calibration_frames(cfg))
    (coll / "calibration" / "pixel_size.json").write_text(json.dumps({"pixel_size_um": 0.5}))
    out = work / "run"
    model = str(work / "model" / "model.pt")
    submit(head, "jobs.run", str(coll), "--model", model, "--out", str(out), "--shard", "256")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert {u["analyze"]["status"] for u in manifest["units"].values()} == {"done"}
    import pyarrow.parquet as pq

    grains = pq.read_table(out / "grains.parquet").to_pandas()
    assert set(grains["section"]) == {"secA", "secB"}
    np.testing.assert_allclose(grains["area_um2"], grains["area_px"] * 0.25)


def test_demo(head, work):
    submit(head, "jobs.demo", "--out", str(work / "demo"), "--steps", "2", "--grid", "2", "2", "--frame", "200", "300")
    import cv2

    summary = json.loads((work / "demo" / "demo_summary.json").read_text())
    pred = zarr.open_group(str(work / "demo" / "run" / "lode.ome.zarr"), mode="r")
    pairs = [
        (cv2.imread(str(work / "demo" / "truth" / f"{s}.png"), cv2.IMREAD_UNCHANGED), pred[f"{s}/labels/minerals/0"][:])
        for s in ("section-S1", "section-S2")
    ]
    hits = sum(int(((t == p) & (t != 255)).sum()) for t, p in pairs)
    pixels = sum(int((t != 255).sum()) for t, _ in pairs)
    assert summary["pixel_accuracy"] == pytest.approx(hits / pixels)
    assert json.loads((work / "demo" / "run" / "manifest.json").read_text())["status"] == "complete"
    assert all(s["stitch_rms_px"] < 0.5 for s in summary["sections"].values())
