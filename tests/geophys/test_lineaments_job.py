import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr

from engine.errors import LodeInputError
from engine.geophys.card import LineamentCard
from engine.geophys.evaluate import buffer_scores
from engine.geophys.grid import read_grid, write_grid
from engine.geophys.lineaments import classical_lineaments, read_geojson_lines
from engine.geophys.model import build_model, load_checkpoint, save_checkpoint
from engine.geophys.synth import SurveyConfig, make_survey
from jobs import lineaments as job

FIXTURES = Path(__file__).parent / "fixtures"

SIMPLE = SurveyConfig(
    shape=(128, 128),
    families=(1, 1),
    dykes_per_256=(4, 4),
    plugs_per_256=(0, 0),
    contacts=(0, 0),
    regional_nt=(0.0, 0.0),
    remanent_fraction=0.0,
    reversed_fraction=0.0,
    width=(0.5, 1.0),
    length=(60.0, 100.0),
    top=(1.5, 2.0),
)


def _args(target: str, *inputs: str, **kw):
    """The validated config ``run`` receives."""
    argv = [target, *inputs]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)] if v is not True else [f"--{k.replace('_', '-')}"]
    return job.JOB.validate(job.JOB.parser().parse_args(argv))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    card = LineamentCard(window=64)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_checkpoint(path, build_model(card), card)


def test_checkpoint_roundtrip_rebuilds_same_network(checkpoint):
    import torch

    model, card = load_checkpoint(checkpoint)
    assert card.encoder == "vgg16_bn" and card.window == 64
    again, _ = load_checkpoint(checkpoint)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_classical_baseline_finds_simple_dykes():
    f1 = []
    for seed in range(4):
        s = make_survey(seed, SIMPLE, inclination=60.0, declination=10.0)
        _, lines = classical_lineaments(s.to_dataarray())
        f1.append(buffer_scores([ln.line for ln in lines], s.axes_lines(), 2 * s.spacing_m)["f1"])
    assert np.mean(f1) >= 0.85 and min(f1) >= 0.7


def test_classical_needs_field_angles():
    da = make_survey(0, SIMPLE).to_dataarray()
    da.attrs.pop("inclination")
    with pytest.raises(LodeInputError, match="inclination"):
        classical_lineaments(da)


@pytest.mark.parametrize("suffix", [".tif", ".nc"])
def test_unet_job_preserves_georeferencing(tmp_path, checkpoint, suffix):
    s = make_survey(1, SurveyConfig(shape=(96, 80)))
    da = s.to_dataarray(crs="EPSG:32636")
    da = da.assign_coords(northing=da.northing + 7_100_000.0, easting=da.easting + 410_000.0)
    da.values[30:40, 30:45] = np.nan
    grid = write_grid(da, tmp_path / f"survey{suffix}")
    assert (
        job.run(_args(str(grid), out=tmp_path / "out", model=checkpoint, block=48, executor="serial", geotiff=True))
        == 0
    )
    store = tmp_path / "out" / "axis_probability.zarr"
    assert zarr.open_array(str(store / "axis_probability"), mode="r").chunks == (48, 48)
    prob = read_grid(store)
    np.testing.assert_allclose(prob.northing.values, da.northing.values)
    np.testing.assert_allclose(prob.easting.values, da.easting.values)
    assert np.isnan(prob.values[30:40, 30:45]).all()
    assert np.isfinite(prob.values[:30]).all()
    assert "32636" in prob.attrs["crs"] or "UTM zone 36" in prob.attrs["crs"]
    with rasterio.open(tmp_path / "out" / "axis_probability.tif") as b:
        assert tuple(b.transform)[:6] == (50.0, 0.0, 410_000.0 - 25.0, 0.0, -50.0, 7_100_000.0 + 95 * 50.0 + 25.0)
        assert b.crs.to_epsg() == 32636
        if suffix == ".tif":
            with rasterio.open(grid) as a:
                assert a.transform == b.transform and a.shape == b.shape
    t = prob.attrs["transform"]
    assert t == [50.0, 0.0, 410_000.0 - 25.0, 0.0, 50.0, 7_100_000.0 - 25.0]
    doc = json.loads((tmp_path / "out" / "lineaments.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and doc["properties"]["cell_size"] == 50.0
    assert (tmp_path / "out" / "rose.png").read_bytes()[:4] == b"\x89PNG"


def test_job_equals_pinned_old_output(tmp_path, checkpoint):
    """The job's VGG-16 U-Net (seed 0, window 64) against the pre-port output on the same survey
    (fixtures/pin_vgg*): same lines; probabilities within 1e-5."""
    assert (
        job.run(
            _args(str(FIXTURES / "pin_survey.nc"), out=tmp_path / "o", model=checkpoint, block=48, executor="serial")
        )
        == 0
    )
    prob = zarr.open_array(str(tmp_path / "o" / "axis_probability.zarr" / "axis_probability"), mode="r")[:]
    pinned = np.load(FIXTURES / "pin_vgg_prob.npy")
    assert np.array_equal(np.isnan(prob), np.isnan(pinned))
    assert np.nanmax(np.abs(prob - pinned)) <= 1e-5
    got = json.loads((tmp_path / "o" / "lineaments.geojson").read_text())
    want = json.loads((FIXTURES / "pin_vgg.geojson").read_text())
    assert got["features"] == want["features"] and got["features"]


def _store_bytes(store) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_killed_job_resumes_byte_identical(tmp_path, checkpoint):
    """SIGKILL ``python -m jobs.lineaments`` (Ray executor) once a block is done; the rerun skips the
    done blocks and its probability zarr and GeoJSON equal an uninterrupted run's byte for byte."""
    grid = str(FIXTURES / "pin_survey.nc")
    ref = tmp_path / "ref"
    assert job.run(_args(grid, out=ref, model=checkpoint, block=32, batch_size=1, executor="serial")) == 0
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "jobs.lineaments",
        grid,
        "--model",
        str(checkpoint),
        "--out",
        str(out),
        "--block",
        "32",
        "--batch-size",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = out / "_inference" / "_status" / "axis_probability"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (status.exists() and any(status.glob("*.json"))):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.stem for p in status.glob("*.json")}
    assert 0 < len(done_before) < 9, "the run should have been killed part-way"
    mtimes = {k: (status / f"{k}.json").stat().st_mtime_ns for k in done_before}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "_inference" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["skipped_already_done"] == len(done_before)
    assert all((status / f"{k}.json").stat().st_mtime_ns == t for k, t in mtimes.items())
    assert len(list(status.glob("*.json"))) == 9
    assert _store_bytes(out / "axis_probability.zarr") == _store_bytes(ref / "axis_probability.zarr")
    assert (out / "lineaments.geojson").read_bytes() == (ref / "lineaments.geojson").read_bytes()
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_synth_surveys_then_classical_then_evaluate(tmp_path):
    from jobs.cli import main as lode

    assert (
        lode(["synth", "survey", str(tmp_path / "surveys"), "--files", "--n", "1", "--size", "96", "--seed", "5"]) == 0
    )
    grid = tmp_path / "surveys" / "survey_000.nc"
    truth = tmp_path / "surveys" / "survey_000_truth.geojson"
    assert job.run(_args(str(grid), out=tmp_path / "cl", method="classical")) == 0
    assert read_geojson_lines(tmp_path / "cl" / "lineaments.geojson")
    assert job.run(_args("evaluate", str(truth), str(truth), out=tmp_path / "self.json")) == 0
    self_score = json.loads((tmp_path / "self.json").read_text())
    assert self_score["2_cells"]["f1"] == pytest.approx(1.0)
    assert (
        job.run(_args("evaluate", str(tmp_path / "cl" / "lineaments.geojson"), str(truth), out=tmp_path / "cl.json"))
        == 0
    )
    scores = json.loads((tmp_path / "cl.json").read_text())
    assert 0.0 <= scores["1_cells"]["f1"] <= scores["2_cells"]["f1"] <= 1.0


def test_job_rejects_bad_inputs(tmp_path):
    with pytest.raises(LodeInputError, match="missing.nc"):
        job.run(_args(str(tmp_path / "missing.nc"), out=tmp_path / "o"))
    with pytest.raises(LodeInputError, match="PRED"):
        job.run(_args("evaluate", "only_one.geojson"))
    (tmp_path / "pts.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {}}
                ],
            }
        )
    )
    with pytest.raises(LodeInputError, match="line"):
        read_geojson_lines(tmp_path / "pts.geojson")


def test_help_works_without_ray():
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from jobs import lineaments as j; import argparse; p = argparse.ArgumentParser(); "
            "j.add_arguments(p); p.print_help(); print('ray' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "evaluate" in out.stdout and out.stdout.strip().endswith("False")


def test_train_takes_its_global_batch_from_batch_size(tmp_path):
    """``--batch-size`` is the training batch too: one that does not split over the workers is
    refused naming the flag, before any training starts."""
    with pytest.raises(LodeInputError, match="--batch-size.*global batch 3 does not split equally over 2 workers"):
        job.run(_args("train", data=str(tmp_path / "set.zarr"), out=tmp_path / "m", batch_size=3, workers=2))
    assert not (tmp_path / "m").exists()
