"""Capture calibration on tensors: dark subtraction, flat field, Brown–Conrady undistortion (kornia).

The same code runs on the CPU and on a GPU: :class:`CaptureCalibration` holds the dark, flat and
undistortion maps as tensors on the device it is built for (the caller picks the device in its own
process). A raw frame ``(h, w, 3)`` uint8 becomes ``(raw - dark) / flat`` rounded to uint8, then is
resampled onto the lens's ideal pinhole grid (bicubic, ``newCameraMatrix = K``, black outside the
frame), as OpenCV's ``initUndistortRectifyMap`` + ``remap`` do, in bands of ``MAP_ROWS`` output rows
(no full-frame float output or sampling grid per frame). On the CPU the flat and dark tensors are views
of the :class:`FlatField`'s own arrays. ``valid`` marks the pixels the sensor saw, less 2 px at every
edge; it is the same for every frame, so it is computed once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.calibrate.flat import FlatField
from engine.calibrate.lens import LensModel
from engine.errors import LodeInputError

if TYPE_CHECKING:
    import torch

EDGE_PX = 2
MAP_ROWS = 256


def is_identity(lens: LensModel | None, flat: FlatField | None) -> bool:
    """Nothing to correct: no flat field and no (or an identity) lens."""
    return flat is None and (lens is None or lens.is_identity)


def edge_mask(hw: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` uint8: 255 except the ``EDGE_PX`` pixels at every edge of the frame."""
    h, w = hw
    valid = np.zeros((h, w), np.uint8)
    valid[EDGE_PX : h - EDGE_PX, EDGE_PX : w - EDGE_PX] = 255
    return valid


class CaptureCalibration:
    """Dark, flat and undistortion of frames of size ``hw`` on ``device`` (``"cpu"``, ``"cuda"``);
    ``source`` names the frames in the error raised when the calibration was made for another size."""

    def __init__(
        self,
        lens: LensModel | None,
        flat: FlatField | None,
        hw: tuple[int, int],
        device: str = "cpu",
        source: str | Path = "frames",
    ):
        import torch
        import torch.nn.functional as F
        from kornia.geometry.calibration import distort_points
        from kornia.geometry.conversions import normalize_pixel_coordinates

        self.hw = (int(hw[0]), int(hw[1]))
        self.device = torch.device(device)
        h, w = self.hw
        if flat is not None and flat.frame_hw != self.hw:
            raise LodeInputError(source, f"frame is {h}×{w} but the flat field is {flat.frame_hw}")
        if lens is not None and not lens.is_identity and tuple(lens.frame_hw) != self.hw:
            raise LodeInputError(source, f"frame is {h}×{w} but the lens was calibrated at {tuple(lens.frame_hw)}")
        self.flat: torch.Tensor | None = None
        self.dark: torch.Tensor | None = None
        if flat is not None:
            self.flat = self._chw(flat.flat)
            self.dark = self._chw(flat.dark)
        self.maps: tuple[torch.Tensor, torch.Tensor] | None = None
        inside = torch.ones((1, 1, h, w), device=self.device)
        if lens is not None and not lens.is_identity:
            K = torch.as_tensor(np.asarray(lens.camera_matrix, np.float64), device=self.device)[None]
            dist = torch.as_tensor(np.asarray(lens.dist_coeffs, np.float64).ravel(), device=self.device)[None]
            mx = torch.empty((1, h, w), dtype=torch.float32, device=self.device)
            my = torch.empty_like(mx)
            xs = torch.arange(w, dtype=torch.float64, device=self.device)
            for y0 in range(0, h, MAP_ROWS):  # point by point, so bands of rows bound the float64 temporaries
                ys = torch.arange(y0, min(h, y0 + MAP_ROWS), dtype=torch.float64, device=self.device)
                gy, gx = torch.meshgrid(ys, xs, indexing="ij")
                src = distort_points(torch.stack([gx, gy], -1).reshape(1, -1, 2), K, dist).reshape(len(ys), w, 2)
                mx[0, y0 : y0 + len(ys)], my[0, y0 : y0 + len(ys)] = src[..., 0], src[..., 1]
            inside = ((mx >= -0.5) & (mx < w - 0.5) & (my >= -0.5) & (my < h - 0.5)).float()[None]
            grid = normalize_pixel_coordinates(torch.stack([mx, my], -1), h, w)  # once, not per frame
            self.maps = (grid[..., 0], grid[..., 1])
            del grid, mx, my
        k = 2 * EDGE_PX + 1
        eroded = -F.max_pool2d(-F.pad(inside, (EDGE_PX,) * 4, value=0.0), k, stride=1)
        self.valid = np.ascontiguousarray((eroded[0, 0] > 0).to(torch.uint8).mul(255).cpu().numpy())

    def _chw(self, a: np.ndarray) -> torch.Tensor:
        """``a`` ``(h, w, c)`` float32 as ``(1, c, h, w)`` on the device: on the CPU a view of ``a`` itself
        (channels-last strides, as the frames are laid out), not a copy."""
        import warnings

        import torch

        with warnings.catch_warnings():  # a flat from the object store is read-only; it is only ever read
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(np.asarray(a, np.float32))
        return t.to(self.device).permute(2, 0, 1)[None]

    def __call__(self, raw: np.ndarray, source: str | Path = "frame") -> tuple[np.ndarray, np.ndarray]:
        """Corrected image ``(h, w, 3)`` uint8 and valid mask ``(h, w)`` uint8 (255: seen) of ``raw``."""
        import torch
        from kornia.geometry.transform import remap

        if raw.shape[:2] != self.hw:
            raise LodeInputError(source, f"frame is {raw.shape[0]}×{raw.shape[1]}, calibrated for {self.hw}")
        x = torch.from_numpy(np.ascontiguousarray(raw)).to(self.device).permute(2, 0, 1)[None].float()
        if self.flat is not None and self.dark is not None:
            x = x.sub_(self.dark).div_(self.flat).round_().clamp_(0, 255)
        if self.maps is None:
            return np.ascontiguousarray(x[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy()), self.valid
        image = np.empty((*self.hw, 3), np.uint8)
        for y0 in range(0, self.hw[0], MAP_ROWS):  # bands of output rows: no full-frame float output or grid
            band = remap(
                x,
                self.maps[0][:, y0 : y0 + MAP_ROWS],
                self.maps[1][:, y0 : y0 + MAP_ROWS],
                mode="bicubic",
                align_corners=True,
                normalized_coordinates=True,
            )
            image[y0 : y0 + MAP_ROWS] = band.round_().clamp_(0, 255)[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy()
        return image, self.valid
