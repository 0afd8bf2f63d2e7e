"""``ColourMatrix.apply_torch`` (and ``apply``, which runs it on the CPU) against an OpenCV float32 implementation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from engine.calibrate.colour import ColourMatrix


def opencv_apply(m: ColourMatrix, rgb: np.ndarray) -> np.ndarray:
    """The correction in OpenCV float32: LUT, ``cv2.transform``, clamp, ``cv2.pow``, ``convertScaleAbs``."""
    lut = ((np.arange(256) / 255.0) ** m.gamma).astype(np.float32)
    lin = cv2.LUT(rgb, lut)
    out = cv2.transform(lin, np.hstack([m.matrix[:3].T, m.matrix[3][:, None]]).astype(np.float32))
    np.maximum(out, 0.0, out=out)
    cv2.pow(out, 1.0 / m.gamma, out)
    return cv2.convertScaleAbs(out, alpha=255.0)


def matrices() -> list[ColourMatrix]:
    """Identity, a mild cast, strong crosstalk (clips at 0 and saturates at 255), random casts, gamma 1.8."""
    rng = np.random.default_rng(11)
    fixed = [
        ColourMatrix.identity(),
        ColourMatrix(np.array([[1.1, 0.05, 0], [0.02, 0.9, 0.01], [0, 0.03, 1.2], [0.01, 0.0, 0.02]])),
        ColourMatrix(np.array([[1.8, -0.6, 0.2], [-0.7, 1.6, -0.5], [0.3, -0.4, 2.2], [-0.05, 0.04, -0.02]])),
        ColourMatrix(np.array([[0.8, 0.1, 0.0], [0.1, 0.7, 0.1], [0.0, 0.2, 0.9], [0.02, 0.01, 0.03]]), gamma=1.8),
    ]
    gains = [np.diag(rng.uniform(0.5, 2.0, 3)) + rng.normal(0, 0.2, (3, 3)) for _ in range(4)]
    casts = [ColourMatrix(np.vstack([g, rng.normal(0, 0.05, 3)])) for g in gains]
    return fixed + casts


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (512, 640, 3), dtype=np.uint8)


def _agreement(got: np.ndarray, want: np.ndarray) -> float:
    assert np.abs(got.astype(int) - want).max() <= 1
    return float((got == want).all(-1).mean())


def test_torch_correction_on_cpu_equals_opencv(images):
    outs = [(m.apply_torch(torch.from_numpy(images)).numpy(), opencv_apply(m, images)) for m in matrices()]
    clipped = np.mean([(want == 0).mean() for _, want in outs])
    saturated = np.mean([(want == 255).mean() for _, want in outs])
    assert clipped > 0.02 and saturated > 0.02
    fractions = [_agreement(got, want) for got, want in outs]
    assert min(fractions) >= 0.9999, fractions
    assert np.array_equal(outs[0][0], images)


def test_apply_is_the_torch_correction(images):
    m = matrices()[2]
    want = m.apply_torch(torch.from_numpy(images)).numpy()
    assert np.array_equal(m.apply(images), want)
    assert np.array_equal(m.apply(images[:7].reshape(-1, 3)), want[:7].reshape(-1, 3))
    view = np.moveaxis(np.concatenate([images, images[..., :2]], -1), -1, 0)[:3]  # strided (3, h, w)
    assert np.array_equal(m.apply(np.moveaxis(view, 0, -1)), want)
    with pytest.raises(ValueError, match="uint8"):
        m.apply(images.astype(np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_correction_on_cuda_equals_opencv(images):
    t = torch.from_numpy(images).cuda()
    for m in matrices():
        got = m.apply_torch(t)
        assert got.device.type == "cuda"
        assert _agreement(got.cpu().numpy(), opencv_apply(m, images)) >= 0.9999
