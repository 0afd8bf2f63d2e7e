"""Stage positions in micrometres (engine.stitch.stage): frames paired by their nearest stage positions,
the pixel size fitted after the alignment and written into the NGFF scale; nominal positions in pixels
stitch as they did before."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import zarr

from engine.analyze.sections import pixel_size_of
from engine.calibrate.lens import LensModel
from engine.errors import LodeInputError
from engine.stitch.evaluate import alignment_rms
from engine.stitch.frames import Correction, read_section
from engine.stitch.register import translation
from engine.stitch.section import StitchOptions, stitch_section
from engine.stitch.stage import NEIGHBOURS, fit_stage, section_pixel_size, stage_neighbours, stage_pixels
from engine.synth.captures import CaptureConfig, capture_grid, stage_centres, write_section

TRUTH_UM = 0.65
CFG = CaptureConfig(frame_hw=(120, 160), rows=3, cols=4, seed=51)
# lode stitch of CFG's nominal positions in pixels at 35d4cd8 (before stage positions): its level 0 (the render's
# warps then were OpenCV's: the test renders with them)
PINNED_PIXEL_PANORAMA = "71819843c88bec7ad486b8cac1a7ec46e5c8992e1307834cb96b54e7da10ccea"


@pytest.mark.parametrize("mirrored", [False, True])
def test_fit_stage_recovers_scale_rotation_and_a_mirrored_axis(mirrored):
    rng = np.random.default_rng(0)
    px = np.array([(c * 450.0, r * 300.0) for r in range(3) for c in range(4)]) + rng.uniform(-5, 5, (12, 2))
    th = np.radians(1.5)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) @ np.diag([1.0, -1.0 if mirrored else 1.0])
    stage = 0.65 * px @ R.T + [12000.0, -3500.0] + rng.normal(0, 0.2, (12, 2))
    fit = fit_stage(stage, px)
    assert fit is not None and abs(fit.pixel_size_um / 0.65 - 1) < 1e-3
    assert fit.mirrored is mirrored and abs(fit.rotation_deg - 1.5) < 0.05
    assert 0.1 < fit.rms_um < 0.4 and fit.max_um >= fit.rms_um and fit.frames == 12
    assert fit_stage(stage[:1], px[:1]) is None


def test_stage_neighbours_of_a_grid_are_the_frames_around_each():
    grid = np.array([(c * 300.0, r * 200.0) for r in range(6) for c in range(6)])
    pairs = stage_neighbours(grid)
    assert all(i < j for i, j in pairs) and len(pairs) <= NEIGHBOURS * len(grid) < 36 * 35 // 2
    around = {(i, j) for i in range(36) for j in range(i + 1, 36) if np.all(np.abs(grid[j] - grid[i]) <= [300, 200])}
    assert around <= set(pairs)
    # beyond the eight around it, a frame at the grid's edge takes the next nearest (its row or column)
    assert all(np.all(np.abs(grid[j] - grid[i]) <= [600, 600]) for i, j in pairs)
    assert stage_neighbours(grid[:1]) == []


def test_stage_pixels_turn_the_stage_onto_the_matched_moves_without_a_wrong_match():
    px = np.array([(c * 240.0, r * 160.0) for r in range(3) for c in range(4)])
    stage = 0.5 * px * [1.0, -1.0] + [800.0, 900.0]  # the stage's y axis runs up the image
    pairs = stage_neighbours(stage)
    matches = [(i, j, translation(*(px[j] - px[i]))) for i, j in pairs if np.all(np.abs(px[j] - px[i]) <= [240, 160])]
    i, j, _ = matches[3]
    matches[3] = (i, j, translation(*(px[j] - px[i] + [70.0, -40.0])))
    nominal = stage_pixels(stage, matches, (200, 300))
    assert nominal is not None and np.allclose(nominal - nominal[0], px - px[0], atol=1e-6)
    assert stage_pixels(stage, [], (200, 300)) is None


def test_a_given_pixel_size_comes_first_and_a_stage_fit_far_from_it_is_a_warning():
    fit = fit_stage(np.array([[0.0, 0.0], [130.0, 0.0]]), np.array([[0.0, 0.0], [200.0, 0.0]]))
    assert fit is not None and fit.pixel_size_um == 0.65
    assert section_pixel_size(None, "option", fit, "s1") == (0.65, "stage", None)
    assert section_pixel_size(None, "option", None, "s1") == (None, None, None)
    assert section_pixel_size(0.66, "calibration", fit, "s1") == (0.66, "calibration", None)
    size, source, warning = section_pixel_size(0.7, "calibration", fit, "s1")
    assert (size, source) == (0.7, "calibration") and warning is not None
    assert "section s1" in warning and "0.65 µm/px" in warning and "-7.1 %" in warning


def test_synthetic_stage_positions_are_the_true_centres_times_the_pixel_size(tmp_path):
    caps = capture_grid(None, CFG)
    sec = read_section(write_section(tmp_path, "s1", caps, pixel_size_um=TRUTH_UM))
    assert sec.nominal_xy is None and sec.stage_um is not None
    assert np.allclose(sec.stage_um, TRUTH_UM * stage_centres(caps), atol=1e-4)
    assert json.loads((tmp_path / "s1" / "truth.json").read_text())["pixel_size_um"] == TRUTH_UM


@pytest.mark.parametrize(
    "text, reason",
    [
        ("file,x_um,y_um,z_um\n{a},0,0,0\n{b},100,0,0\n", "needs columns file, x, y"),
        ("file,x,y_um\n{a},0,0\n{b},100,0\n", "needs columns file, x, y"),
        ("", "not none"),
        ("file,x_um,y_um\n{a},0,0\n{b},nan,0\n", "must be finite"),
        ("file,x_um,y_um\n{a},0,0\n{b},1e400,0\n", "must be finite"),
        ("file,x_um,y_um\n{a},0,0\n{b},ten,0\n", "needs numbers in x_um and y_um"),
        ("file,x_um,y_um\n{a},0,0\n{b},100,0\n{a},100,0\n", "listed twice"),
        ("file,x_um,y_um\n{a},0,0\n{b},0,0\n", "all 2 frames are at one position"),
        ("file,x,y\n{a},0,0\n{b},0,0\n", "all 2 frames are at one position"),
        ("file,x_um,y_um\n{a},5,5\n{b},5,5\n{c},200,0\n", "are at one position"),
        ("file,x_um,y_um\n{a},0,0\n", "no position for"),
    ],
    ids=[
        "unknown-column",
        "mixed-units",
        "empty",
        "nan",
        "overflow",
        "not-a-number",
        "listed-twice",
        "um-all-identical",
        "px-all-identical",
        "duplicate",
        "missing",
    ],
)
def test_a_malformed_positions_file_is_refused_naming_it(tmp_path, text, reason):
    tiles = tmp_path / "s1" / "tiles"
    tiles.mkdir(parents=True)
    names = ["a.png", "b.png"] + (["c.png"] if "{c}" in text else [])
    for n in names:
        (tiles / n).write_bytes(b"")
    positions = tmp_path / "s1" / "positions.csv"
    positions.write_text(text.format(a="a.png", b="b.png", c="c.png"))
    with pytest.raises(LodeInputError, match=reason) as err:
        read_section(tmp_path / "s1")
    assert err.value.source == str(positions)


def _panorama(store: Path, name: str) -> zarr.Group:
    return zarr.open_group(str(store), mode="r")[name]


@pytest.mark.ray
def test_stage_positions_in_micrometres_give_the_pixel_size_and_pixels_stitch_as_before(
    tmp_path, corrector, caplog, opencv_warps
):
    caps = capture_grid(None, CFG)
    write_section(tmp_path / "coll", "px", caps)
    write_section(tmp_path / "coll", "um", caps, pixel_size_um=TRUTH_UM)
    flipped = write_section(tmp_path / "coll", "flipped", caps, pixel_size_um=TRUTH_UM) / "positions.csv"
    rows = [line.split(",") for line in flipped.read_text().splitlines()]
    flipped.write_text("\n".join([",".join(rows[0])] + [f"{f},{x},{-float(y) + 5000.0:.4f}" for f, x, y in rows[1:]]))
    store = tmp_path / "out.zarr"
    opts = StitchOptions(shard=256)
    px = stitch_section(tmp_path / "coll" / "px", store, Correction(), opts, "serial", corrector)
    um = stitch_section(tmp_path / "coll" / "um", store, Correction(), opts, "serial", corrector)

    assert px["positions"] == "nominal" and px["pixel_size_um"] is None and px["stage"] is None
    level0 = np.asarray(_panorama(store, "px")["0"][...])
    assert hashlib.sha256(level0.tobytes()).hexdigest() == PINNED_PIXEL_PANORAMA
    assert pixel_size_of(_panorama(store, "px")) is None

    assert um["positions"] == "stage" and um["frames_placed"] == 12
    assert um["pixel_size_source"] == "stage" and um["stage"]["warning"] is None
    assert abs(um["pixel_size_um"] / TRUTH_UM - 1) < 0.005
    assert um["stage"]["rms_um"] < 0.1 and not um["stage"]["mirrored"]
    group = _panorama(store, "um")
    assert pixel_size_of(group) == um["pixel_size_um"] == group.attrs["lode"]["stitch"]["pixel_size_um"]
    axes = group.attrs["ome"]["multiscales"][0]["axes"]
    assert [a.get("unit") for a in axes] == [None, "micrometer", "micrometer"]
    # the same captures, placed from their stage positions, are as close to the truth as from the nominal grid
    assert um["panorama_hw"] == px["panorama_hw"] and len(um["edges"]) == len(px["edges"])
    truth_lens = LensModel(CFG.lens.camera_matrix, CFG.lens.dist_coeffs, CFG.frame_hw)
    for rep in (px, um):
        placed = [np.array(f["transform"]) for f in rep["frames"]]
        assert alignment_rms(placed, None, caps.transforms, truth_lens, CFG.frame_hw)[0] < 0.1

    # a stage whose y axis runs up the image gives the same pixel size, mirrored
    up = stitch_section(tmp_path / "coll" / "flipped", store, Correction(), opts, "serial", corrector)
    assert up["stage"]["mirrored"] and abs(up["pixel_size_um"] / TRUTH_UM - 1) < 0.005
    assert up["frames_placed"] == 12 and len(up["edges"]) == len(px["edges"])

    calibrated = StitchOptions(shard=256, pixel_size_um=0.7, pixel_size_source="calibration")
    with caplog.at_level(logging.WARNING, logger="engine.stitch.section"):
        cal = stitch_section(
            tmp_path / "coll" / "um", tmp_path / "cal.zarr", Correction(), calibrated, "serial", corrector
        )
    assert (cal["pixel_size_um"], cal["pixel_size_source"]) == (0.7, "calibration")
    assert pixel_size_of(_panorama(tmp_path / "cal.zarr", "um")) == 0.7
    assert cal["stage"]["pixel_size_um"] == um["pixel_size_um"] and "section um" in cal["stage"]["warning"]
    assert [r.getMessage() for r in caplog.records] == [cal["stage"]["warning"]]


@pytest.mark.ray
@pytest.mark.slow  # the job's Ray Data render: ~40 s on 2 busy cores
def test_lode_stitch_takes_the_calibration_first_and_says_where_each_pixel_size_came_from(
    tmp_path, ray_session, capsys, caplog
):
    from jobs import stitch as stitch_job

    coll = tmp_path / "coll"
    small = CaptureConfig(frame_hw=(160, 220), rows=2, cols=2, seed=52)
    write_section(coll, "secA", capture_grid(None, small), pixel_size_um=TRUTH_UM)
    write_section(coll, "secB", capture_grid(None, CaptureConfig(frame_hw=(160, 220), rows=1, cols=2, seed=53)))
    (coll / "calibration").mkdir()
    (coll / "calibration" / "pixel_size.json").write_text(json.dumps({"pixel_size_um": 0.7}))
    store = tmp_path / "out.zarr"
    argv = [str(coll), "--out", str(store), "--shard", "256", "--no-lens", "--no-flat"]
    with caplog.at_level(logging.WARNING, logger="engine.stitch.section"):
        assert stitch_job.run(stitch_job.JOB.validate(stitch_job.JOB.parser().parse_args(argv))) == 0
    sections = json.loads((tmp_path / "out.zarr.stitch.json").read_text())["sections"]
    a, b = sections["secA"], sections["secB"]
    assert (
        (a["pixel_size_um"], a["pixel_size_source"])
        == (b["pixel_size_um"], b["pixel_size_source"])
        == (
            0.7,
            "calibration",
        )
    )
    assert abs(a["stage"]["pixel_size_um"] / TRUTH_UM - 1) < 0.005 and b["stage"] is None
    assert [r.getMessage() for r in caplog.records] == [a["stage"]["warning"]]
    out = capsys.readouterr().out
    assert ", 0.7 µm/px (calibration), flagged none" in out
    assert all(pixel_size_of(_panorama(store, s)) == 0.7 for s in ("secA", "secB"))
