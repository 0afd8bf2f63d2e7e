"""Warps of frames into panorama boxes: :class:`FrameWarper` (kornia, on the device the render's actor
picked in its own process) for the render, and :func:`warp` (OpenCV) for thumbnails and seam strips.

Both map source pixel centres to output pixel centres (``align_corners``) and give 0 outside the
source. :class:`FrameWarper` first cuts the source down to the window the output box reads (grown by
the cubic kernel's reach), so a warp costs the box, not the frame, on every device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np

from engine.stitch.register import apply, compose, invert, translation

Mode = Literal["bicubic", "bilinear", "nearest"]
REACH = 4
"""Source pixels kept past the ones the output box maps to: the cubic kernel reads 2 either side."""
BAND_ROWS = 256
"""Output rows :class:`FrameWarper` warps at once."""


def warp(src: np.ndarray, F: np.ndarray, size: tuple[int, int], flags: int) -> np.ndarray:
    """``src`` warped by ``F`` (2×3 affine or 3×3 projective, source → output px) onto ``size`` ``(w, h)``,
    zero outside (OpenCV)."""
    if len(F) == 2:
        return cv2.warpAffine(src, F, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
    return cv2.warpPerspective(src, F, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)


def read_window(F: np.ndarray, src_hw: tuple[int, int], size: tuple[int, int]) -> tuple[slice, slice] | None:
    """Rows and columns of a source of ``src_hw`` that warping it by ``F`` onto ``size`` ``(w, h)`` reads:
    the output box's corners mapped back (``F`` maps lines to lines), grown by :data:`REACH`, clipped;
    ``None`` when it reads none of the source."""
    w, h = size
    c = apply(invert(F), np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], np.float64))
    r0, r1 = max(0, int(np.floor(c[:, 1].min())) - REACH), min(src_hw[0], int(np.ceil(c[:, 1].max())) + REACH + 1)
    c0, c1 = max(0, int(np.floor(c[:, 0].min())) - REACH), min(src_hw[1], int(np.ceil(c[:, 0].max())) + REACH + 1)
    return (slice(r0, r1), slice(c0, c1)) if r1 > r0 and c1 > c0 else None


class FrameWarper:
    """Warps numpy frames with kornia on ``device`` (``cpu`` or ``cuda``) and hands numpy back.

    Built in the process that uses it (a render actor's ``setup``), after that process chose its device.
    Sources warped by one transform share one sampling grid (:meth:`many`).
    """

    def __init__(self, device: str = "cpu"):
        import torch

        self.device = torch.device(device)

    def __call__(self, src: np.ndarray, F: np.ndarray, size: tuple[int, int], mode: Mode) -> np.ndarray:
        """``src`` ``(h, w)`` or ``(h, w, c)`` (uint8 or float32) warped by ``F`` (2×3 affine or 3×3
        projective, source → output px) onto ``size`` ``(w, h)``: ``(h_out, w_out[, c])`` of ``src``'s
        dtype, 0 outside the source; uint8 is rounded and clipped."""
        return self.many([(src, mode)], F, size)[0]

    def many(self, srcs: Sequence[tuple[np.ndarray, Mode]], F: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
        """Each of ``srcs`` (arrays of one height and width, each with its sampling mode) warped as
        :meth:`__call__` does, in bands of :data:`BAND_ROWS` output rows: each band from the part of the
        sources it reads, with one sampling grid for all of them (no float copy of a whole box)."""
        w, h = size
        out = [np.zeros((max(h, 0), max(w, 0), *src.shape[2:]), src.dtype) for src, _ in srcs]
        for y0 in range(0, max(h, 0) if w > 0 else 0, BAND_ROWS):
            rows = min(BAND_ROWS, h - y0)
            for o, band in zip(out, self._band(srcs, compose(translation(0, -y0), F), (w, rows))):
                if band is not None:
                    o[y0 : y0 + rows] = band
        return out

    def _band(self, srcs: Sequence[tuple[np.ndarray, Mode]], F: np.ndarray, size: tuple[int, int]) -> list[Any]:
        """Each of ``srcs`` warped by ``F`` onto ``size`` ``(w, h)`` (``None`` for all when the box reads
        none of them), from one cut of them and one grid."""
        import torch
        from kornia.geometry.transform import remap

        window = read_window(F, srcs[0][0].shape[:2], size)
        if window is None:
            return [None] * len(srcs)
        ry, rx = window
        if ry.stop - ry.start < 2 or rx.stop - rx.start < 2:  # a grid normalised over a cut of 2 px or more
            ry, rx = slice(max(0, ry.stop - 2), ry.stop), slice(max(0, rx.stop - 2), rx.stop)
        map_x, map_y = self._grid(
            compose(F, translation(rx.start, ry.start)), (ry.stop - ry.start, rx.stop - rx.start), size[::-1]
        )
        out = []
        for src, mode in srcs:
            cut = torch.from_numpy(np.ascontiguousarray(src[ry, rx])).to(self.device)
            x = (cut[None, None] if src.ndim == 2 else cut.permute(2, 0, 1)[None]).float()
            del cut
            y = remap(x, map_x, map_y, mode=mode, align_corners=True, normalized_coordinates=True)[0]
            del x
            y = y.permute(1, 2, 0) if src.ndim == 3 else y[0]
            if src.dtype == np.uint8:
                y = y.round_().clamp_(0, 255).to(torch.uint8)
            out.append(y.cpu().numpy())
            del y
        return out

    def _grid(self, G: np.ndarray, cut_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[Any, Any]:
        """Where each output pixel ``(h, w)`` samples a source cut of ``cut_hw`` placed by ``G`` (cut →
        output px), in grid_sample's normalised coordinates (pixel centres at ±1): ``map_x``,
        ``map_y``, ``(1, h, w)`` float32 each."""
        import torch

        ch, cw = cut_hw
        N = np.array([[2 / (cw - 1), 0, -1], [0, 2 / (ch - 1), -1], [0, 0, 1]]) @ np.linalg.inv(
            G if len(G) == 3 else np.vstack([G, [0, 0, 1]])
        )
        h, w = out_hw
        xs = torch.arange(w, dtype=torch.float32, device=self.device)[None]
        ys = torch.arange(h, dtype=torch.float32, device=self.device)[:, None]

        def plane(r: np.ndarray) -> Any:
            return (xs * float(r[0]) + float(r[2])) + ys * float(r[1])

        if len(G) == 2 or (G[2, 0] == 0 and G[2, 1] == 0):
            N = N / N[2, 2]
            return plane(N[0])[None], plane(N[1])[None]
        den = plane(N[2])
        return (plane(N[0]) / den)[None], (plane(N[1]).div_(den))[None]
