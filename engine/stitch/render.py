"""Render one output shard of a panorama from the frames that touch it.

Blend weights come from the low-resolution seam label map: each frame's ownership is
blurred (a feathered seam a few low-res pixels wide), upsampled to the shard and cut
by the frame's valid mask. Shards share no state, so neighbours agree at their edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.stitch.register import apply, compose, translation


@dataclass(frozen=True)
class ShardFrame:
    """A frame's index, its frame→panorama transform and its per-channel gain."""

    index: int
    M: np.ndarray
    gain: np.ndarray


def frame_box(M: np.ndarray, hw: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = hw
    c = apply(M, np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64))
    return float(c[:, 0].min()), float(c[:, 1].min()), float(c[:, 0].max()), float(c[:, 1].max())


def touches(M: np.ndarray, hw: tuple[int, int], y0: int, x0: int, h: int, w: int) -> bool:
    bx0, by0, bx1, by1 = frame_box(M, hw)
    return bx1 >= x0 - 1 and bx0 <= x0 + w and by1 >= y0 - 1 and by0 <= y0 + h


def seam_weight(labels: np.ndarray, scale: float, k: int, y0: int, x0: int, h: int, w: int,
                sigma_low: float) -> np.ndarray:
    """Blurred ownership of frame ``k`` on the shard grid ``(h, w)`` float32."""
    pad = int(np.ceil(3 * sigma_low)) + 2
    lh, lw = labels.shape
    ly0 = max(0, int(np.floor(y0 * scale)) - pad)
    lx0 = max(0, int(np.floor(x0 * scale)) - pad)
    ly1 = min(lh, int(np.ceil((y0 + h) * scale)) + pad + 1)
    lx1 = min(lw, int(np.ceil((x0 + w) * scale)) + pad + 1)
    if ly1 <= ly0 or lx1 <= lx0:
        return np.zeros((h, w), np.float32)
    own = (labels[ly0:ly1, lx0:lx1] == k).astype(np.float32)
    if sigma_low > 0:
        own = cv2.GaussianBlur(own, (0, 0), sigma_low, borderType=cv2.BORDER_REPLICATE)
    up = np.array([[1 / scale, 0, (lx0 + 0.5) / scale - 0.5 - x0], [0, 1 / scale, (ly0 + 0.5) / scale - 0.5 - y0]])
    return cv2.warpAffine(own, up, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def render_shard(y0: int, x0: int, h: int, w: int, frames: list[ShardFrame], images: list[np.ndarray],
                 valids: list[np.ndarray], labels: np.ndarray, scale: float, sigma_low: float = 1.5,
                 interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """The shard ``(3, h, w)`` uint8 at panorama offset ``(y0, x0)``."""
    acc = np.zeros((h, w, 3), np.float32)
    wsum = np.zeros((h, w), np.float32)
    acc_any = np.zeros((h, w, 3), np.float32)
    n_any = np.zeros((h, w), np.float32)
    for f, img, valid in zip(frames, images, valids):
        F = compose(translation(-x0, -y0), f.M)
        warped = cv2.warpAffine(img, F, (w, h), flags=interpolation, borderMode=cv2.BORDER_CONSTANT)
        v = cv2.warpAffine(valid, F, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT) > 0
        vals = warped.astype(np.float32) * f.gain.astype(np.float32)
        wt = seam_weight(labels, scale, f.index, y0, x0, h, w, sigma_low) * v
        acc += vals * wt[..., None]
        wsum += wt
        acc_any += vals * v[..., None]
        n_any += v
    out = np.where((wsum > 1e-3)[..., None], acc / np.maximum(wsum, 1e-6)[..., None],
                   acc_any / np.maximum(n_any, 1)[..., None])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(2, 0, 1)
