"""XPL panoramas of a stitched section: rendered with the PPL frames' transforms, refined onto the
PPL panorama, stacked as channels; checked against the synthetic truth scene."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from engine.calibrate.flat import fit_flat
from engine.calibrate.lens import LensModel, fit_lens
from engine.errors import LodeInputError
from engine.register.xpl_section import XplSectionOptions, angles_for, covered_box, stack_section_xpl, xpl_angles
from engine.stitch.evaluate import alignment_rms, section_lens, truth_in_panorama
from engine.stitch.frames import Correction
from engine.stitch.section import StitchOptions, stitch_section
from engine.synth.captures import CaptureConfig, calibration_frames
from engine.synth.xpl import s3_lookalike_spec
from engine.synth.xpl_captures import XplCaptureConfig, capture_xpl_section, write_xpl_section

HW = (160, 240)
CHANNELS = ["XPL000", "XPL045"]


@pytest.fixture(scope="module")  # 19 s alone here, Ray's start included (40-60 s with the machine busy)
def stitched(ray_session, tmp_path_factory):
    """A 3×3 grid of degraded frames (lens, vignetting, drift, noise, JPEG) of an S3 look-alike section
    with XPL captures at 0° and 45°, each 1.5 px off the PPL frames; stitched with the fitted calibration."""
    import ray

    from engine.stitch.section import frame_corrector

    root = tmp_path_factory.mktemp("xplsec")
    cfg = CaptureConfig.degraded(frame_hw=HW, seed=7, rows=3, cols=3)
    caps = capture_xpl_section(s3_lookalike_spec(11), cfg, XplCaptureConfig(angles=(0.0, 45.0), seed=3))
    write_xpl_section(root / "coll", "s1", caps)
    cal = calibration_frames(cfg)
    corr = Correction(fit_lens(cal["checkerboard"]), fit_flat(cal["flat"], cal["dark"]))
    corrector = frame_corrector()
    store = str(root / "pano.zarr")
    report = stitch_section(root / "coll" / "s1", store, corr, StitchOptions(shard=256), "serial", corrector)
    record = stack_section_xpl(
        root / "coll" / "s1",
        store,
        "s1",
        str(root / "xpl.zarr"),
        CHANNELS,
        corr.flat,
        corrector,
        str(root / "work"),
        XplSectionOptions(executor="serial"),
    )
    yield root, caps, cfg, corr, report, record, corrector
    ray.kill(corrector, no_restart=True)


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sub-pixel shift ``(dx, dy)`` between two RGB images ``(h, w, 3)`` by phase correlation of their grey."""
    ga, gb = (cv2.cvtColor(np.float32(x), cv2.COLOR_RGB2GRAY) for x in (a, b))
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb, cv2.createHanningWindow(ga.shape[::-1], cv2.CV_32F))
    return np.array([dx, dy])


@pytest.mark.ray
def test_xpl_panorama_matches_the_truth_scene_in_the_panorama_frame(stitched):
    root, caps, cfg, corr, report, record, _ = stitched
    g = zarr.open_group(str(root / "xpl.zarr"), mode="r")["s1"]
    est = [np.array(f["transform"]) if f["placed"] else None for f in report["frames"]]
    true_lens = LensModel(cfg.lens.camera_matrix, cfg.lens.dist_coeffs, HW)
    rms, G = alignment_rms(est, section_lens(report, corr.lens), caps.ppl.transforms, true_lens, HW)
    assert rms < 0.3
    ppl = np.asarray(zarr.open_group(str(root / "pano.zarr"), mode="r")["s1/0"][...]).transpose(1, 2, 0)
    y0, y1, x0, x1 = covered_box(ppl.max(-1) > 0)
    inner = (slice(y0 + 8, y1 - 8), slice(x0 + 8, x1 - 8))
    # the truth frame the PPL panorama shows (its residual shift against G's placement folded in)
    ppl_shift = _shift(ppl[inner], truth_in_panorama(caps.source, G, ppl.shape[:2])[inner])
    assert np.hypot(*ppl_shift) < 0.6
    for name in ("000", "045"):
        pano = np.asarray(g[f"xpl/{name}/0"][...]).transpose(1, 2, 0).astype(np.float32)
        truth = truth_in_panorama(caps.scenes[name], G, pano.shape[:2])
        assert np.hypot(*(_shift(pano[inner], truth[inner]) - ppl_shift)) < 0.25
        err = np.abs(pano[inner] - truth[inner])
        assert err.mean() < 2.5, (name, err.mean())  # noise 1.5 DN, JPEG 93, resampling
        # the refinement found the angle's offset (XPL frame px → PPL frame px; frames ≈ panorama axes)
        found = np.array(record["refinement"][name]["transform"])[:, 2]
        assert np.abs(found - caps.offsets[name][:, 2]).max() < 0.3
        assert record["refinement"][name]["shift_px"] == pytest.approx(1.5, abs=0.3)
    assert record["angles"] == ["000", "045"] and record["residual_px"] < 1.5


@pytest.mark.ray
def test_stacked_section_holds_the_ppl_then_the_xpl_panoramas_in_channel_order(stitched):
    root, *_, record, _ = stitched
    g = zarr.open_group(str(root / "xpl.zarr"), mode="r")["s1"]
    ppl = np.asarray(zarr.open_group(str(root / "pano.zarr"), mode="r")["s1/0"][...])
    stacked = np.asarray(g["0"][...])
    assert stacked.shape == (5, *ppl.shape[1:])
    assert np.array_equal(stacked[:3], ppl)
    for c, name in enumerate(("000", "045"), start=3):
        rgb = np.asarray(g[f"xpl/{name}/0"][...]).transpose(1, 2, 0)
        assert np.array_equal(stacked[c], cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))
    assert [ch["label"] for ch in g.attrs["ome"]["omero"]["channels"]] == ["R", "G", "B", *CHANNELS]
    assert g.attrs["lode"]["stitch"]["xpl"] == record and g.attrs["lode"]["complete"] is True


@pytest.mark.ray
def test_channels_in_another_order_are_stacked_in_that_order(stitched, tmp_path):
    root, caps, cfg, corr, report, record, corrector = stitched
    rec = stack_section_xpl(
        root / "coll" / "s1",
        str(root / "pano.zarr"),
        "s1",
        str(tmp_path / "x.zarr"),
        ["XPL45", "XPL0"],
        corr.flat,
        corrector,
        str(tmp_path / "work"),
        XplSectionOptions(executor="serial"),
    )
    assert rec["angles"] == ["045", "000"]
    a = np.asarray(zarr.open_group(str(tmp_path / "x.zarr"), mode="r")["s1/0"][...])
    b = np.asarray(zarr.open_group(str(root / "xpl.zarr"), mode="r")["s1/0"][...])
    assert np.array_equal(a[3], b[4]) and np.array_equal(a[4], b[3])


@pytest.mark.ray
def test_a_stack_with_the_same_inputs_is_kept(stitched):
    root, caps, cfg, corr, report, record, _ = stitched
    again = stack_section_xpl(
        root / "coll" / "s1", str(root / "pano.zarr"), "s1", str(root / "xpl.zarr"), CHANNELS, corr.flat, None, "unused"
    )  # no corrector: nothing is rendered again
    assert again == record


def test_xpl_layout_errors_name_the_folder(tmp_path):
    sec = tmp_path / "s1"
    (sec / "tiles").mkdir(parents=True)
    for n in ("a", "b"):
        cv2.imwrite(str(sec / "tiles" / f"{n}.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(LodeInputError, match="no XPL captures") as exc:
        xpl_angles(sec)
    assert str(sec / "xpl") in str(exc.value)
    (sec / "xpl" / "000").mkdir(parents=True)
    cv2.imwrite(str(sec / "xpl" / "000" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(LodeInputError, match="no capture for tile"):
        xpl_angles(sec)
    cv2.imwrite(str(sec / "xpl" / "000" / "b.png"), np.zeros((8, 8, 3), np.uint8))
    assert [Path(p).name for p in xpl_angles(sec)["000"]] == ["a.png", "b.png"]


def test_covered_box_holds_only_covered_pixels():
    valid = np.zeros((290, 430), np.uint8)
    for x, y, a in [(3, 2, 0.3), (180, 5, -0.3), (2, 122, 0.2), (185, 120, -0.25)]:
        cv2.fillPoly(valid, [np.int32(cv2.boxPoints(((x + 120, y + 80), (240, 160), a)))], 1)
    y0, y1, x0, x1 = covered_box(valid > 0)
    assert valid[y0:y1, x0:x1].all()
    assert (y1 - y0) * (x1 - x0) > 0.9 * 280 * 420


def test_channels_pick_their_angle_folders():
    assert angles_for(["XPL045", "XPL000"], ["000", "045", "090"], "f") == ["045", "000"]
    assert angles_for(["XPL45"], ["000", "045"], "f") == ["045"]
    with pytest.raises(LodeInputError, match="no angle folder for channel XPL030") as exc:
        angles_for(["XPL030"], ["000", "045"], "sec/xpl")
    assert exc.value.source == "sec/xpl"
