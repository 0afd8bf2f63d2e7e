"""Capture calibration on tensors (kornia) against OpenCV's undistortion and flat division."""

import cv2
import numpy as np
import pytest

from engine.calibrate.capture import CaptureCalibration, edge_mask
from engine.calibrate.flat import FlatField
from engine.calibrate.lens import LensModel
from engine.errors import LodeInputError

HW = (240, 360)


def _lens(hw: tuple[int, int] = HW) -> LensModel:
    h, w = hw
    K = np.array([[1.1 * w, 0, (w - 1) / 2 + 3.2], [0, 1.1 * w, (h - 1) / 2 - 2.7], [0, 0, 1.0]])
    return LensModel(K, np.array([-0.12, 0.04, 0.0006, -0.0004, 0.0]), hw)


def _flat(hw: tuple[int, int] = HW) -> FlatField:
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2
    flat = np.stack([1 - 0.6 * r2, 1 - 0.5 * r2, 1 - 0.4 * r2], -1).astype(np.float32)
    dark = np.stack([np.full((h, w), v, np.float32) for v in (4.0, 6.0, 5.0)], -1)
    return FlatField(flat, dark)


def _raw(ff: FlatField, seed: int = 0) -> np.ndarray:
    """A textured scene (grains of a few px, edges at every scale) as the sensor records it."""
    h, w = ff.frame_hw
    rng = np.random.default_rng(seed)
    scene = cv2.resize(rng.uniform(20, 235, (h // 6, w // 6, 3)).astype(np.float32), (w, h), cv2.INTER_NEAREST)
    scene = cv2.GaussianBlur(scene, (0, 0), 1.2) + rng.normal(0, 6, (h, w, 3))
    return np.clip(np.rint(scene * ff.flat + ff.dark), 0, 255).astype(np.uint8)


def _opencv(raw: np.ndarray, lens: LensModel, ff: FlatField) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's undistortion (same camera matrix kept, cubic) after the flat division."""
    h, w = raw.shape[:2]
    flat = np.clip(np.rint((raw.astype(np.float32) - ff.dark) / ff.flat), 0, 255).astype(np.uint8)
    m1, m2 = cv2.initUndistortRectifyMap(
        lens.camera_matrix, lens.dist_coeffs, None, lens.camera_matrix, (w, h), cv2.CV_32FC1
    )
    image = cv2.remap(flat, m1, m2, cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
    seen = cv2.remap(np.full((h, w), 255, np.uint8), m1, m2, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    valid = cv2.erode(seen, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return image, valid


def test_cpu_path_equals_opencv_undistort_and_flat_division():
    lens, ff = _lens(), _flat()
    cal = CaptureCalibration(lens, ff, HW, "cpu")
    for seed in (0, 1):
        raw = _raw(ff, seed)
        image, valid = cal(raw)
        ref, ref_valid = _opencv(raw, lens, ff)
        assert image.dtype == np.uint8 and image.shape == raw.shape
        assert np.array_equal(valid, ref_valid)
        inside = valid > 0
        assert 0.75 < inside.mean() < 0.98  # the lens bends the frame's edge inwards
        diff = np.abs(image.astype(np.int16) - ref.astype(np.int16))[inside]
        assert (diff <= 0.5).mean() >= 0.999 and diff.max() <= 2
        moved = np.abs(image.astype(np.int16) - raw.astype(np.int16))[inside]
        assert moved.mean() > 10  # undistortion and flat division did change the frame


def test_flat_only_and_identity():
    ff = _flat()
    raw = _raw(ff, 2)
    image, valid = CaptureCalibration(None, ff, HW)(raw)
    ref = np.clip(np.rint((raw.astype(np.float32) - ff.dark) / ff.flat), 0, 255).astype(np.uint8)
    assert np.array_equal(image, ref) and np.array_equal(valid, edge_mask(HW))
    same, valid = CaptureCalibration(LensModel.identity(HW), None, HW)(raw)
    assert np.array_equal(same, raw) and valid.sum() == 255 * (HW[0] - 4) * (HW[1] - 4)


def test_bands_of_rows_give_the_whole_frame_remap_and_the_flat_is_not_copied(monkeypatch):
    import engine.calibrate.capture as capture

    lens, ff = _lens(), _flat()
    raw = _raw(ff, 4)
    whole = CaptureCalibration(lens, ff, HW)(raw)[0]  # HW[0] < MAP_ROWS: one band
    monkeypatch.setattr(capture, "MAP_ROWS", 48)  # 240 rows: five bands
    cal = CaptureCalibration(lens, ff, HW)
    assert np.array_equal(cal(raw)[0], whole)
    assert cal.flat is not None and cal.dark is not None
    assert cal.flat.data_ptr() == ff.flat.ctypes.data and cal.dark.data_ptr() == ff.dark.ctypes.data


def test_frames_of_another_size_are_refused_by_name():
    with pytest.raises(LodeInputError, match="flat field") as err:
        CaptureCalibration(None, _flat((100, 120)), HW, source="sec/tiles/a.png")
    assert err.value.source == "sec/tiles/a.png"
    with pytest.raises(LodeInputError, match="lens was calibrated"):
        CaptureCalibration(_lens((100, 120)), None, HW, source="sec/tiles/a.png")
    cal = CaptureCalibration(_lens(), None, HW)
    with pytest.raises(LodeInputError, match="b.png"):
        cal(np.zeros((100, 120, 3), np.uint8), "sec/tiles/b.png")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a GPU")
def test_gpu_path_equals_cpu_path():
    lens, ff = _lens(), _flat()
    raw = _raw(ff, 3)
    cpu, valid = CaptureCalibration(lens, ff, HW, "cpu")(raw)
    gpu, gvalid = CaptureCalibration(lens, ff, HW, "cuda")(raw)
    assert np.array_equal(valid, gvalid)
    assert (np.abs(cpu.astype(np.int16) - gpu.astype(np.int16))[valid > 0] <= 1).mean() >= 0.999
