import json

import numpy as np
import pytest
import zarr

from engine.synth.captures import CaptureConfig, calibration_frames, capture_grid, write_calibration, write_section
from jobs import calibrate as calibrate_job
from jobs import stitch as stitch_job


def _parse(module, argv):
    """The validated config ``run`` receives."""
    return module.JOB.validate(module.JOB.parser().parse_args(argv))


@pytest.mark.ray
@pytest.mark.slow  # ~20 s; raw calibration frames through stitching are also lode run's default tests (test_run.py)
def test_lode_stitch_collection_with_raw_calibration(tmp_path, ray_session):
    cfg = CaptureConfig.degraded(frame_hw=(200, 300), seed=31, rows=2, cols=3)
    write_section(tmp_path / "coll", "secA", capture_grid(None, cfg))
    write_section(
        tmp_path / "coll",
        "secB",
        capture_grid(None, CaptureConfig.degraded(frame_hw=(200, 300), seed=32, rows=2, cols=2)),
    )
    write_calibration(tmp_path / "coll", calibration_frames(cfg))
    store = tmp_path / "out.zarr"
    rc = stitch_job.run(_parse(stitch_job, [str(tmp_path / "coll"), "--out", str(store), "--shard", "256"]))
    assert rc == 0
    root = zarr.open_group(str(store))
    assert sorted(n for n, _ in root.groups()) == ["secA", "secB"]
    summary = json.loads((tmp_path / "out.zarr.stitch.json").read_text())
    assert summary["calibration"]["lens"]["views"] >= 8 and summary["calibration"]["flat"]
    for name, n in (("secA", 6), ("secB", 4)):
        rep = summary["sections"][name]
        assert rep["frames_placed"] == n and rep["rms_px"] < 0.5
        assert root[name].attrs["lode"]["stitch"]["frames_placed"] == n
        assert "layout" in root[name].attrs["lode"]


def test_lode_calibrate_lens_and_flat_write_models(tmp_path):
    cfg = CaptureConfig.degraded(frame_hw=(200, 300), seed=33)
    cal_dir = write_calibration(tmp_path, calibration_frames(cfg))
    assert (
        calibrate_job.run(
            _parse(calibrate_job, ["lens", str(cal_dir / "checkerboard"), "--out", str(tmp_path / "lens.json")])
        )
        == 0
    )
    lens = json.loads((tmp_path / "lens.json").read_text())
    assert abs(lens["dist_coeffs"][0] - cfg.distortion[0]) < 0.01
    assert (
        calibrate_job.run(
            _parse(
                calibrate_job,
                ["flat", str(cal_dir / "flat"), "--dark", str(cal_dir / "dark"), "--out", str(tmp_path / "flat.npz")],
            )
        )
        == 0
    )
    with np.load(tmp_path / "flat.npz") as z:
        assert abs(float(z["flat"][100, 150].mean()) - 1.0) < 0.01 and float(z["flat"][0, 0].mean()) < 0.75


def test_bad_collection_names_the_input(tmp_path):
    from engine.errors import LodeInputError

    with pytest.raises(LodeInputError, match="tiles"):
        stitch_job.run(_parse(stitch_job, [str(tmp_path), "--out", str(tmp_path / "o.zarr")]))
    (tmp_path / "s1" / "tiles").mkdir(parents=True)
    (tmp_path / "s1" / "tiles" / "a.png").write_bytes(b"not a png")
    from engine.io.images import read_rgb
    from engine.stitch.frames import read_section

    with pytest.raises(LodeInputError, match="a.png"):
        read_rgb(read_section(tmp_path / "s1").tiles[0])
