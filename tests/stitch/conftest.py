"""The frame corrector the stitch tests share: one actor for the session (torch and kornia imported
once), as ``jobs.stitch`` shares one between the sections of a job."""

import cv2
import pytest


@pytest.fixture(scope="session")
def corrector(ray_session):
    import ray

    from engine.stitch.section import frame_corrector

    actor = frame_corrector()
    yield actor
    ray.kill(actor, no_restart=True)


class OpenCVWarper:
    """The render's frame warps as they were before they moved to kornia (OpenCV's), for tests whose
    pinned bytes were written with them."""

    FLAGS = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}

    def __init__(self, device: str = "cpu"):
        assert device == "cpu"

    def many(self, srcs, F, size):
        from engine.stitch.warp import warp

        return [warp(src, F, size, self.FLAGS[mode]) for src, mode in srcs]


@pytest.fixture
def opencv_warps(monkeypatch):
    """Renders in this process warp with :class:`OpenCVWarper` (the serial executor's; Ray's actors keep kornia)."""
    from engine.stitch import render

    monkeypatch.setattr(render, "FrameWarper", OpenCVWarper)
