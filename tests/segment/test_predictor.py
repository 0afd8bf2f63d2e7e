"""Blocked blending equals one global sliding window (MONAI's gaussian sliding_window_inference)."""

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from engine.nets import build
from engine.raster import block_grid
from engine.raster.grid import PaddedGrid
from engine.segment.predictor import BlockPredictor


@pytest.mark.parametrize(
    "h,w,window,overlap,block",
    [
        (300, 430, 128, 0.25, (128, 256)),
        (100, 90, 128, 0.25, (64, 64)),
        (257, 300, 64, 0.5, (64, 128)),
        (100, 700, 64, 0.25, (100, 700)),  # one block 14 window columns wide: the ring wraps many times
    ],
)
def test_blocked_equals_monai(h, w, window, overlap, block):
    torch.manual_seed(1)
    model = build("unet", encoder="resnet18", in_channels=3, classes=5).eval()
    img = np.random.default_rng(0).integers(0, 255, (3, h, w), dtype=np.uint8)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]
    x = (torch.from_numpy(img).float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    with torch.no_grad():
        ref = sliding_window_inference(
            x[None], (window, window), 4, lambda t: torch.softmax(model(t), 1), overlap=overlap, mode="gaussian"
        )[0]
    pred = BlockPredictor(model, mean, std, window, overlap, batch_size=3)
    out = torch.full_like(ref, float("nan"))
    labels = torch.full(ref.shape[1:], -1, dtype=torch.long)
    pg = PaddedGrid(h, w, window, overlap)
    for b in block_grid(h, w, block):
        y0, y1, x0, x1 = pg.input_region(b)
        lab, p = pred.predict(img[:, y0:y1, x0:x1], (y0, x0), (h, w), b, 5, "float32")
        out[:, b.y0 : b.y0 + b.h, b.x0 : b.x0 + b.w] = torch.from_numpy(p)
        labels[b.y0 : b.y0 + b.h, b.x0 : b.x0 + b.w] = torch.from_numpy(lab.astype(np.int64))
    diff = (out - ref).abs().max().item()
    assert diff <= 1e-4
    # The model runs channels-last here and contiguous under MONAI, so probabilities differ by float
    # rounding (measured 4.6e-6 at most). Where MONAI's two best classes are closer than twice that, the
    # argmax is a numerical tie (a random-weight model has some): there the label must be one of the two.
    top2 = ref.topk(2, dim=0)
    tie = (top2.values[0] - top2.values[1]) <= 2 * diff
    assert torch.equal(labels[~tie], ref.argmax(0)[~tie])
    assert ((labels == top2.indices[0]) | (labels == top2.indices[1])).all()
    assert tie.sum().item() <= max(2, 1e-4 * tie.numel())
    assert torch.equal(labels, out.argmax(0))


def test_colour_matrix_corrects_the_rgb_channels_on_the_model_device():
    """Same blend as predicting on the region corrected beforehand; channels after RGB pass unchanged."""
    from engine.calibrate.colour import ColourMatrix

    torch.manual_seed(2)
    h, w, window = 150, 120, 64
    model = build("unet", encoder="resnet18", in_channels=5, classes=4).eval()
    img = np.random.default_rng(4).integers(0, 256, (5, h, w), dtype=np.uint8)
    colour = ColourMatrix(np.array([[1.6, -0.3, 0.1], [-0.2, 1.4, -0.1], [0.1, -0.2, 1.9], [0.02, -0.01, 0.0]]))
    corrected = img.copy()
    corrected[:3] = np.moveaxis(colour.apply(np.ascontiguousarray(np.moveaxis(img[:3], 0, -1))), -1, 0)
    pred = BlockPredictor(model, [0.5] * 5, [0.25] * 5, window, 0.25, batch_size=4)
    pg = PaddedGrid(h, w, window, 0.25)
    for b in block_grid(h, w, (64, 96)):
        y0, y1, x0, x1 = pg.input_region(b)
        region = img[:, y0:y1, x0:x1].copy()
        region.flags.writeable = False
        lab, p = pred.predict(region, (y0, x0), (h, w), b, 4, "float32", colour)
        lab_ref, p_ref = pred.predict(corrected[:, y0:y1, x0:x1], (y0, x0), (h, w), b, 4, "float32")
        assert np.array_equal(lab, lab_ref) and np.array_equal(p, p_ref)
        assert np.array_equal(region, img[:, y0:y1, x0:x1])
    _, plain = pred.predict(img, (0, 0), (h, w), b, 4, "float32")
    assert not np.array_equal(plain, p)


class _Extreme(torch.nn.Module):
    """Logits far apart (hundreds), the first class's -inf where ``first_inf``."""

    def __init__(self, first_inf: bool):
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.first_inf = first_inf

    def forward(self, x):
        logits = self.conv(x) * 300
        if self.first_inf:
            logits[:, 0] = float("-inf")
        return logits


@pytest.mark.parametrize("first_inf", [False, True])
def test_blend_of_extreme_logits_equals_monai(first_inf):
    """The softmax shift (the first class's logit, redone from the maximum where exp would overflow)
    gives MONAI's blend for logits hundreds apart and for a class that is never possible."""
    model = _Extreme(first_inf).eval()
    h, w, window = 150, 170, 64
    img = np.random.default_rng(5).integers(0, 255, (3, h, w), dtype=np.uint8)
    x = (torch.from_numpy(img).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        ref = sliding_window_inference(
            x[None], (window, window), 4, lambda t: torch.softmax(model(t), 1), overlap=0.25, mode="gaussian"
        )[0]
    pred = BlockPredictor(model, [0.5] * 3, [0.25] * 3, window, 0.25, batch_size=4)
    b = block_grid(h, w, (h, w))[0]
    lab, p = pred.predict(img, (0, 0), (h, w), b, 4, "float32")
    assert np.isfinite(p).all()
    assert np.abs(p - ref.numpy()).max() <= 1e-4
    assert np.array_equal(lab, p.argmax(0))
    assert (p[0] == 0).all() if first_inf else (p.max(0) > 0.99).mean() > 0.5
