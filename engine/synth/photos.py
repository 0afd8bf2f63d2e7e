"""A real-texture source for :func:`engine.synth.captures.capture_grid`: a mosaic of photographs.

The photographs are the ones scikit-image ships inside its wheel (``skimage.data``; none
that need a download). Each fills 512×512 cells of the mosaic (smaller ones mirrored to
size, larger ones cut into cells); cells are laid out in a seeded order with seeded flips.
The mosaic keeps real textures and their gaps: dark sky, smooth gradients, the black rim of
a fundus photograph, lettering and fur, next to one another.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from engine.synth.captures import CaptureConfig, Captures, capture_grid

CELL = 512
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "brick",
    "grass",
    "gravel",
    "camera",
    "coins",
    "moon",
    "clock",
)


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def _cells(img: np.ndarray) -> list[np.ndarray]:
    """``img`` as 512×512 cells: cut into whole cells where it is large enough, mirrored up to one where not."""
    h, w = img.shape[:2]
    if h < CELL or w < CELL:
        pad_y, pad_x = max(0, CELL - h), max(0, CELL - w)
        img = cv2.copyMakeBorder(
            img, pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2, cv2.BORDER_REFLECT
        )
        h, w = img.shape[:2]
    ny, nx = h // CELL, w // CELL
    y0, x0 = (h - ny * CELL) // 2, (w - nx * CELL) // 2
    return [
        img[y0 + r * CELL : y0 + (r + 1) * CELL, x0 + c * CELL : x0 + (c + 1) * CELL]
        for r in range(ny)
        for c in range(nx)
    ]


def photo_cells() -> list[np.ndarray]:
    """Every bundled photograph of :data:`PHOTOS` as RGB uint8 cells of 512×512, in a fixed order."""
    from skimage import data

    return [cell for name in PHOTOS for cell in _cells(_rgb(getattr(data, name)()))]


def photo_mosaic(shape: tuple[int, int], seed: int = 0, blur_px: float = 0.5) -> np.ndarray:
    """An RGB uint8 mosaic ``(h, w, 3)`` of photograph cells: every cell once before any repeats, each
    flipped at random; rows are offset by half a cell so cell corners never line up. A Gaussian of
    ``blur_px`` stands for the objective's blur (so the frames resample the scene faithfully)."""
    h, w = shape
    cells = photo_cells()
    rng = np.random.default_rng(seed)
    ny, nx = -(-h // CELL), -(-w // CELL) + 1
    out = np.empty((ny * CELL, nx * CELL, 3), np.uint8)
    order: list[int] = []
    while len(order) < ny * nx:
        order += [int(k) for k in rng.permutation(len(cells))]
    for k in range(ny * nx):
        r, c = divmod(k, nx)
        cell = cells[order[k]]
        flip = int(rng.integers(-1, 3))
        if flip < 2:
            cell = cv2.flip(cell, flip)
        out[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] = cell
    for r in range(1, ny, 2):
        out[r * CELL : (r + 1) * CELL] = np.roll(out[r * CELL : (r + 1) * CELL], CELL // 2, axis=1)
    return cv2.GaussianBlur(out[:h, :w], (0, 0), blur_px) if blur_px else np.ascontiguousarray(out[:h, :w])


def photo_config(
    rows: int, cols: int, frame_hw: tuple[int, int], degraded: bool, seed: int = 0, **kw: Any
) -> CaptureConfig:
    """A grid of frames as a new user's stage gives them: jitter up to ±30 px and ±0.3°, 25 % overlap;
    ``degraded`` adds the camera of :meth:`CaptureConfig.degraded` (lens, vignetting, gains, noise, JPEG)."""
    base: dict[str, Any] = dict(
        rows=rows, cols=cols, frame_hw=frame_hw, overlap=0.25, jitter_px=30.0, rotation_deg=0.3, seed=seed
    )
    base.update(kw)
    return CaptureConfig.degraded(**base) if degraded else CaptureConfig(**base)


def photo_grid(cfg: CaptureConfig) -> Captures:
    """:func:`capture_grid` of a :func:`photo_mosaic` (seeded by ``cfg.seed``) with its exact truth."""
    return capture_grid(photo_mosaic(cfg.source_hw, cfg.seed), cfg)
