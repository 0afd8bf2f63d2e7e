"""Blocked sliding-window prediction with Gaussian blending.

For one output block, every window of the global grid that touches the block runs
through the model, and the softmax outputs are blended with Gaussian weights. The
block is swept column of windows by column of windows (batches may span columns): pixels
left of a window's start are final once that window is reached, so the accumulators are a
ring of one window's width of the block (``classes × block_h × window`` floats) however wide
the block is. The result equals
a global sliding window over the whole image (MONAI's ``sliding_window_inference``,
gaussian mode), including its symmetric zero padding of images smaller than a window.

Everything runs channels-last: windows are cut from an interleaved copy of the block,
the model runs on NHWC memory (faster convolutions on the CPU), and the accumulators are
``(h, w, classes)`` so blending reads model outputs contiguously and the label of a pixel
is an argmax over contiguous memory. A colour matrix, when given, corrects the block's first three
channels once on the model's device before any window is cut.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from engine.raster.blend import blend_weights
from engine.raster.grid import Block, PaddedGrid

if TYPE_CHECKING:
    from engine.calibrate.colour import ColourMatrix


class BlockPredictor:
    """Runs a model over the windows of a block and blends them.

    Args:
        model: maps ``(n, in_channels, window, window)`` to class logits of the same size; an
            ``nn.Module`` is moved to ``device`` (its memory format is the caller's: see
            ``checkpoint.load_inference_model``), a TorchScript module is used as given.
        mean, std: per-channel normalisation on the 0..1 scale.
        window, overlap: the global window grid.
        batch_size: windows per forward pass.
        device: torch device; AMP (fp16 autocast) is used on CUDA when ``amp``.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: list[float],
        std: list[float],
        window: int,
        overlap: float,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        amp: bool = True,
    ):
        self.device = torch.device(device)
        self.model = model if isinstance(model, torch.jit.ScriptModule) else model.to(self.device).eval()
        self.window = window
        self.overlap = overlap
        self.batch_size = batch_size
        self.amp = amp and self.device.type == "cuda"
        self.scale = torch.tensor([1 / (255.0 * s) for s in std], device=self.device)
        self.shift = torch.tensor([m / s for m, s in zip(mean, std)], device=self.device)
        self.weights = torch.from_numpy(blend_weights(window, "gaussian")).to(self.device)
        self.windows_run = 0

    def warm_up(self) -> None:
        """Two single windows through the model: allocation and (TorchScript) graph
        optimisation happen before real work."""
        c = self.scale.shape[0]
        x = torch.zeros((1, self.window, self.window, c), device=self.device).permute(0, 3, 1, 2)
        for _ in range(2):
            self._forward(x)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax numerators ``(n, h, w, classes)`` of channels-last windows ``(n, c, h, w)`` (the exp of
        the logits less a per-pixel shift) and their sums over the classes ``(n, h, w)``."""
        with torch.inference_mode():
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                logits = self.model(x)
            # In place on the model's own output, over the contiguous (n, h, w, classes) view: on the CPU,
            # torch.softmax(dim=1) over channels-last logits takes twice as long, and a new tensor for
            # each batch costs as much as the arithmetic. The division is left to the blend weights.
            z = logits.float().permute(0, 2, 3, 1)
            # Any per-pixel shift gives the same softmax: the first class's logit is a strided copy where
            # the maximum over the classes is a slow reduction. Logits 80 above it are shifted again.
            shift = z[..., :1].clone()
            if not torch.isfinite(shift).all():
                shift = z.amax(-1, keepdim=True)
            z.sub_(shift)
            if z.max() > 80:
                z.sub_(z.amax(-1, keepdim=True))
            z = z.exp_()
            return z, z.sum(-1)

    def _windows(
        self,
        hwc: torch.Tensor,
        origin: tuple[int, int],
        pad: tuple[int, int],
        starts: list[tuple[int, int]],
        size: tuple[int, int],
    ) -> torch.Tensor:
        """Normalised channels-last windows ``(n, c, w, w)`` cut from the block's interleaved
        pixels ``hwc``; pixels outside the image are 0 after normalisation."""
        w = self.window
        out = torch.zeros((len(starts), w, w, hwc.shape[-1]), dtype=torch.float32, device=self.device)
        h_img, w_img = size
        for i, (sy, sx) in enumerate(starts):
            iy0, ix0 = sy - pad[0], sx - pad[1]
            y0, y1 = max(iy0, 0), min(iy0 + w, h_img)
            x0, x1 = max(ix0, 0), min(ix0 + w, w_img)
            dst = out[i, y0 - iy0 : y1 - iy0, x0 - ix0 : x1 - ix0]
            dst.copy_(hwc[y0 - origin[0] : y1 - origin[0], x0 - origin[1] : x1 - origin[1]])
            dst.mul_(self.scale).sub_(self.shift)
        return out.permute(0, 3, 1, 2)

    def predict(
        self,
        region: np.ndarray,
        origin: tuple[int, int],
        image_size: tuple[int, int],
        block: Block,
        num_classes: int,
        probabilities: str | None = None,
        colour: ColourMatrix | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Blend every window touching ``block``.

        Args:
            region: ``(c, rh, rw)`` uint8 image pixels starting at image coordinates ``origin``
                and covering ``PaddedGrid.input_region(block)``; a channels-last array seen
                through ``np.moveaxis(hwc, -1, 0)`` is used without a copy.
            image_size: full image ``(height, width)``.
            probabilities: ``None``, or the dtype to return blended probabilities in
                (``uint8`` quantises ×255).
            colour: corrects channels 0-2 of ``region`` on the model's device (later channels,
                such as XPL captures, pass unchanged).

        Returns:
            ``labels (h, w) uint8`` (channel index of the most probable class) and the
            probabilities ``(classes, h, w)`` or ``None``. Only a window-wide slab of
            float accumulators lives at any time.
        """
        pg = PaddedGrid(image_size[0], image_size[1], self.window, self.overlap)
        py, px = pg.pad
        w = self.window
        by0, bx0 = block.y0 + py, block.x0 + px
        by1, bx1 = by0 + block.h, bx0 + block.w
        ys, xs = pg.grid.touching(by0, by1, bx0, bx1)

        labels = np.empty((block.h, block.w), np.uint8)
        probs = None if probabilities is None else np.empty((num_classes, block.h, block.w), probabilities)
        # A ring of one window's columns: column x accumulates in slot x % window until it is final.
        acc = torch.zeros((block.h, w, num_classes), dtype=torch.float32, device=self.device)
        cnt = None if probs is None else torch.zeros((block.h, w), dtype=torch.float32, device=self.device)
        weights = self.weights[..., None]
        with warnings.catch_warnings():
            # A read-only view of the object store is only ever read here.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            hwc = torch.from_numpy(np.ascontiguousarray(np.moveaxis(region, 0, -1))).to(self.device)
        if colour is not None:
            hwc = torch.cat([colour.apply_torch(hwc[..., :3]), hwc[..., 3:]], dim=-1)
        done = max(xs[0], bx0)

        def ring(c0: int, c1: int) -> list[tuple[int, int, int]]:
            """Columns ``[c0, c1)`` (at most a window) as ``(slot0, slot1, column0)`` runs of the ring."""
            runs = []
            while c0 < c1:
                s0 = c0 % w
                n = min(c1 - c0, w - s0)
                runs.append((s0, s0 + n, c0))
                c0 += n
            return runs

        def finalize(upto: int) -> None:
            nonlocal done
            for s0, s1, c in ring(done, min(upto, bx1)):
                part = acc[:, s0:s1]
                # The weight sum is positive and per pixel, so the argmax needs no division.
                labels[:, c - bx0 : c - bx0 + s1 - s0] = part.argmax(-1).to(torch.uint8).cpu().numpy()
                if probs is not None and cnt is not None:
                    slab = part / cnt[:, s0:s1, None]
                    if probabilities == "uint8":
                        slab = torch.round(slab * 255)
                    probs[:, :, c - bx0 : c - bx0 + s1 - s0] = slab.permute(2, 0, 1).cpu().numpy().astype(probabilities)
                    cnt[:, s0:s1] = 0
                part.zero_()
            done = max(done, min(upto, bx1))

        starts = [(sy, sx) for sx in xs for sy in ys]
        for b in range(0, len(starts), self.batch_size):
            chunk = starts[b : b + self.batch_size]
            out, sums = self._forward(self._windows(hwc, origin, (py, px), chunk, image_size))
            self.windows_run += len(chunk)
            for (sy, sx), p, total in zip(chunk, out, sums):
                r0, r1 = max(sy, by0), min(sy + w, by1)
                c0, c1 = max(sx, bx0), min(sx + w, bx1)
                if c1 - done > w:
                    finalize(sx)  # windows come column by column: columns left of this one are final
                rows = slice(r0 - sy, r1 - sy)
                for s0, s1, c in ring(c0, c1):
                    cols = slice(c - sx, c - sx + s1 - s0)
                    wts = weights[rows, cols]
                    scale = wts / total[rows, cols, None]
                    acc[r0 - by0 : r1 - by0, s0:s1].addcmul_(p[rows, cols], scale)
                    if cnt is not None:
                        cnt[r0 - by0 : r1 - by0, s0:s1] += wts[..., 0]
        finalize(bx1)
        return labels, probs
