"""Patch augmentation in CPU tasks: rotation, small scale, flips, brightness, colour shift.

One affine warp per patch maps the output patch back into the source image (OpenCV
``warpAffine``: bilinear for the image, nearest for the mask). Output pixels whose source lies
outside the image carry no data: their label is ``void`` (ignored by the loss and the metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

VOID = 255


@dataclass(frozen=True)
class AugmentParams:
    rotation: float = 20.0
    scale: float = 0.1
    flips: bool = True
    brightness: float = 0.05
    color: float = 0.03

    def margin(self, patch: int) -> int:
        """Source pixels needed around a patch so that a rotated, scaled view stays inside it."""
        a = math.radians(min(self.rotation, 45.0))
        return int(math.ceil(patch * ((math.cos(a) + math.sin(a)) * (1 + self.scale) - 1) / 2)) + 1


def augment_patch(
    image: np.ndarray, mask: np.ndarray, y0: int, x0: int, patch: int, p: AugmentParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a ``patch`` square whose untransformed top-left corner is ``(y0, x0)`` and augment it.

    Args:
        image: ``(h, w, c)`` uint8 source image (RGB, then any crossed-polar channels, which get
            the brightness change but no colour shift).
        mask: ``(h, w)`` uint8 labels of the source (``VOID`` allowed).

    Returns:
        image ``(patch, patch, c)`` uint8 and mask ``(patch, patch)`` uint8.
    """
    h, w = mask.shape
    m = p.margin(patch)
    sy0, sy1 = max(y0 - m, 0), min(y0 + patch + m, h)
    sx0, sx1 = max(x0 - m, 0), min(x0 + patch + m, w)
    src_img, src_mask = image[sy0:sy1, sx0:sx1], mask[sy0:sy1, sx0:sx1]
    angle = float(rng.uniform(-p.rotation, p.rotation)) if p.rotation else 0.0
    scale = float(np.exp(rng.uniform(-math.log1p(p.scale), math.log1p(p.scale)))) if p.scale else 1.0
    c = (patch - 1) / 2
    centre_src = (x0 + c - sx0, y0 + c - sy0)
    fwd = np.asarray(cv2.getRotationMatrix2D(centre_src, angle, scale), np.float64)
    fwd[:, 2] += c - np.asarray(centre_src)
    out_img = np.concatenate(
        [  # OpenCV warps at most 4 channels at a time
            cv2.warpAffine(
                np.ascontiguousarray(src_img[..., c : c + 4]),
                fwd,
                (patch, patch),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            ).reshape(patch, patch, -1)
            for c in range(0, src_img.shape[2], 4)
        ],
        axis=-1,
    )
    out_mask = cv2.warpAffine(
        src_mask, fwd, (patch, patch), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=VOID
    )
    if p.flips:
        if rng.random() < 0.5:
            out_img, out_mask = out_img[:, ::-1], out_mask[:, ::-1]
        if rng.random() < 0.5:
            out_img, out_mask = out_img[::-1], out_mask[::-1]
    if p.brightness or p.color:
        gain = 1 + rng.uniform(-p.brightness, p.brightness) + np.zeros(out_img.shape[2])
        gain[:3] += rng.uniform(-p.color, p.color, 3)
        out_img = np.clip(out_img.astype(np.float32) * gain.astype(np.float32), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out_img), np.ascontiguousarray(out_mask)
