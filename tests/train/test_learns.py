"""Training learns: a few CPU steps of the engine's training step lower the loss and beat a constant
predictor on held-out patches (no Ray; the Ray Train loop runs the same step)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi

from engine.nets import build
from engine.train.loop import _loss, train_step

PALETTE = np.array([[200, 60, 40], [40, 160, 60], [50, 70, 190]], np.float32) / 255


def patches(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random blobs of 3 classes, each class one colour plus noise: (n, 3, size, size), (n, size, size)."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=(n, 3, size, size)), sigma=(0, 0, 6, 6))
    labels = field.argmax(1)
    images = PALETTE[labels].transpose(0, 3, 1, 2) + rng.normal(0, 0.15, (n, 3, size, size))
    return torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels)


def test_training_lowers_the_loss_and_beats_a_constant_predictor_on_held_out_patches():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    x, y = patches(32, seed=1)
    x_val, y_val = patches(16, seed=2)
    model = build("unet", encoder="resnet18", in_channels=3, classes=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss_fn = _loss("ce")
    model.train()
    losses = [train_step(model, opt, scaler, loss_fn, x[i : i + 8], y[i : i + 8]) for i in list(range(0, 32, 8)) * 4]
    assert np.mean(losses[-4:]) < 0.3 * np.mean(losses[:4])
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    constant = max((y_val == c).float().mean().item() for c in range(3))  # the best constant guess, in hindsight
    assert accuracy > constant + 0.3, (accuracy, constant)
