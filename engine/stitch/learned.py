"""The optional learned matcher: kornia's LoFTR, with weights from a local file the user gives.

Off by default (``RegisterOptions.matcher = "sift"``). Nothing is downloaded: the network is built
without weights and loaded from ``RegisterOptions.matcher_weights`` (a ``torch.save`` state dict, or
a LoFTR checkpoint holding one under ``state_dict``), read with ``weights_only=True``. The device is
the one this process was given (:func:`engine.raster.runner.local_device`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import LodeInputError

if TYPE_CHECKING:
    from torch import nn


def check_weights(path: str | Path | None) -> Path:
    """The weights file, or an error naming it (before any frame is read)."""
    if path is None:
        raise LodeInputError("--matcher-weights", "the LoFTR matcher needs a local weights file")
    p = Path(path)
    if not p.is_file():
        raise LodeInputError(p, "no such LoFTR weights file")
    return p


@functools.lru_cache(maxsize=2)
def load_loftr(path: str, device: str = "cpu") -> nn.Module:
    """LoFTR (kornia's default configuration) with the weights in ``path``, in eval mode on ``device``;
    one network per process and file."""
    import torch
    from kornia.feature import LoFTR

    p = check_weights(path)
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for files that are not its archives
        raise LodeInputError(p, f"not a torch weights file: {exc}") from exc
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise LodeInputError(p, "holds no state dict")
    net = LoFTR(pretrained=None)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise LodeInputError(p, f"not LoFTR weights: {str(exc).splitlines()[0]}") from exc
    return net.eval().to(device)


def loftr_matches(
    net: nn.Module,
    grey_i: np.ndarray,
    valid_i: np.ndarray,
    box_i: tuple[int, int, int, int] | None,
    grey_j: np.ndarray,
    valid_j: np.ndarray,
    box_j: tuple[int, int, int, int] | None,
    min_confidence: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Matched points ``(n, 2)`` in frame i and frame j (frame coordinates, float64) inside the boxes
    ``(x0, y0, x1, y1)`` (whole frames for ``None``), on valid pixels, with confidence at least
    ``min_confidence``; ordered by position in frame i, so RANSAC sees the same order every run."""
    import torch

    device = next(net.parameters()).device

    def crop(grey: np.ndarray, box: tuple[int, int, int, int] | None):
        x0, y0, x1, y1 = box if box else (0, 0, grey.shape[1], grey.shape[0])
        t = torch.from_numpy(np.ascontiguousarray(grey[y0:y1, x0:x1], np.float32) / 255.0)
        return t[None, None].to(device), np.array([x0, y0], np.float64)

    ti, oi = crop(grey_i, box_i)
    tj, oj = crop(grey_j, box_j)
    with torch.inference_mode():
        out = net({"image0": ti, "image1": tj})
    keep = out["confidence"].cpu().numpy() >= min_confidence
    a = out["keypoints0"].cpu().numpy().astype(np.float64)[keep] + oi
    b = out["keypoints1"].cpu().numpy().astype(np.float64)[keep] + oj
    on = _on_valid(a, valid_i) & _on_valid(b, valid_j)
    a, b = a[on], b[on]
    order = np.lexsort((b[:, 0], b[:, 1], a[:, 0], a[:, 1]))
    return a[order], b[order]


def _on_valid(pts: np.ndarray, valid: np.ndarray) -> np.ndarray:
    x = np.clip(np.rint(pts[:, 0]).astype(int), 0, valid.shape[1] - 1)
    y = np.clip(np.rint(pts[:, 1]).astype(int), 0, valid.shape[0] - 1)
    return valid[y, x] > 0
