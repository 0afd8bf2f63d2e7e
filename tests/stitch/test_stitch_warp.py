"""The render's frame warps (kornia) against OpenCV's ``warpAffine`` / ``warpPerspective``, on a
photograph shipped with scikit-image, and the same warps on a GPU when there is one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from engine.stitch.warp import FrameWarper, read_window, warp

FLAGS = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def _frame() -> np.ndarray:
    return cv2.resize(data.astronaut(), (450, 300), interpolation=cv2.INTER_AREA)


def _transforms(homography: bool, n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        a, s = rng.uniform(-0.02, 0.02), rng.uniform(0.98, 1.02)
        M = np.array([[s * np.cos(a), -s * np.sin(a), rng.uniform(-80, 40)], [s * np.sin(a), s * np.cos(a), 0.0]])
        M[1, 2] = rng.uniform(-60, 30)
        out.append(np.vstack([M, [rng.uniform(-4e-5, 4e-5), rng.uniform(-4e-5, 4e-5), 1.0]]) if homography else M)
    return out


@pytest.mark.parametrize("homography", [False, True])
def test_frame_warps_equal_opencv(homography):
    frame = _frame()
    mask = np.full(frame.shape[:2], 255, np.uint8)
    cv2.circle(mask, (0, 0), 80, 0, -1)
    depth = cv2.distanceTransform((mask > 0).astype(np.uint8), cv2.DIST_L2, 3)
    warper = FrameWarper()
    for F in _transforms(homography):
        size = (400, 260)
        for mode, src in (("bicubic", frame), ("nearest", mask), ("bilinear", depth)):
            ours, theirs = warper(src, F, size, mode), warp(src, F, size, FLAGS[mode])
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
            diff = np.abs(ours.astype(np.float64) - theirs)
            if mode == "bicubic":  # OpenCV rounds sample positions to 1/32 px
                assert diff.max() <= 1 and (diff == 0).mean() >= 0.999
            elif mode == "nearest":
                assert (diff == 0).mean() >= 0.9995
            else:
                assert diff.max() <= 0.05
        assert warper(frame, F, size, "bicubic").any()


def test_a_box_the_frame_never_reaches_is_black():
    F = np.array([[1.0, 0, 1000], [0, 1, 0]])
    assert read_window(F, (300, 450), (100, 80)) is None
    out = FrameWarper()(_frame(), F, (100, 80), "bicubic")
    assert out.shape == (80, 100, 3) and not out.any()


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a GPU")
def test_gpu_warps_equal_cpu_warps():
    frame = _frame()
    for F in _transforms(True, 3):
        cpu, gpu = (
            FrameWarper("cpu")(frame, F, (400, 260), "bicubic"),
            FrameWarper("cuda")(frame, F, (400, 260), "bicubic"),
        )
        diff = np.abs(cpu.astype(np.int16) - gpu)
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.999
