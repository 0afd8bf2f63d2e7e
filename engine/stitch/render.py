"""Render the output shards of a panorama from the frames that touch them, on the raster runner.

Blend weights come from the low-resolution seam label map: each frame's ownership is
blurred (a feathered seam a few low-res pixels wide), upsampled to the shard and cut
by the frame's valid mask. Shards share no state, so neighbours agree at their edges.
:class:`RenderStage` is the block stage: its units are the shards of each section's
panorama; a read loads the corrected frames that touch the shard from the section's
frame cache, compute is :func:`render_shard`, write puts the shard into the partial group.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from engine.errors import LodeInputError
from engine.io import fs
from engine.io.layout import SEAM_LABELS, array_at, group_at
from engine.io.ome import open_store, write_block
from engine.raster import Block, BlockStage, Unit, block_grid, units_of
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


def seam_weight(
    labels: np.ndarray, scale: float, k: int, y0: int, x0: int, h: int, w: int, sigma_low: float
) -> np.ndarray:
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


def render_shard(
    y0: int,
    x0: int,
    h: int,
    w: int,
    frames: list[ShardFrame],
    images: list[np.ndarray],
    valids: list[np.ndarray],
    labels: np.ndarray,
    scale: float,
    sigma_low: float = 1.5,
    interpolation: int = cv2.INTER_CUBIC,
) -> np.ndarray:
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
    out = np.where(
        (wsum > 1e-3)[..., None], acc / np.maximum(wsum, 1e-6)[..., None], acc_any / np.maximum(n_any, 1)[..., None]
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def frame_path(work: str, k: int, kind: str) -> str:
    """Where the correction step caches frame ``k``'s ``image`` (h, w, 3) or ``valid`` (h, w) as .npy."""
    return fs.join(work, "frames", f"{k:05d}.{kind}.npy")


def _load(path: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(fs.read_bytes(path)))
    except (OSError, ValueError) as exc:
        raise LodeInputError(path, f"corrected frame cache unreadable: {exc}") from exc


@dataclass(frozen=True)
class RenderPlan:
    """How one section's panorama is rendered: frame placement and gains, seam map scale, the
    partial group written and the work folder that holds the corrected frames."""

    section: str
    store: str
    group: str
    work: str
    frame_hw: tuple[int, int]
    mats: tuple[np.ndarray | None, ...]
    gains: tuple[np.ndarray, ...]
    scale: float
    sigma_low: float
    shape: tuple[int, int]
    shard: int

    @property
    def blocks(self) -> list[Block]:
        return block_grid(*self.shape, self.shard)

    @property
    def units(self) -> list[Unit]:
        return units_of(self.section, self.blocks)

    def touching(self, b: Block) -> list[int]:
        """Indices of the placed frames that touch block ``b``."""
        return [k for k, m in enumerate(self.mats) if m is not None and touches(m, self.frame_hw, b.y0, b.x0, b.h, b.w)]


class RenderStage(BlockStage):
    """Shards of the panoramas of ``plans`` (by section): corrected frames in → RGB shard out."""

    name = "stitch-render"

    def __init__(self, plans: dict[str, RenderPlan]):
        self.plans = plans

    def read(self, unit: Unit) -> dict[str, Any]:
        plan = self.plans[unit.raster]
        ks = plan.touching(unit.block)
        h, w = plan.frame_hw
        images = np.zeros((max(len(ks), 1), h, w, 3), np.uint8)
        valids = np.zeros((max(len(ks), 1), h, w), np.uint8)
        for i, k in enumerate(ks):
            images[i] = _load(frame_path(plan.work, k, "image"))
            valids[i] = _load(frame_path(plan.work, k, "valid"))
        labels = array_at(open_store(plan.store), f"{plan.group}/{SEAM_LABELS}")[:]
        return {"frames": np.array(ks + [-1], np.int64), "images": images, "valids": valids, "labels": labels}

    def compute(self, unit: Unit, data: dict[str, Any]) -> dict[str, Any]:
        plan = self.plans[unit.raster]
        ks = [int(k) for k in data["frames"][:-1]]
        frames = [ShardFrame(k, plan.mats[k], plan.gains[k]) for k in ks]  # type: ignore[arg-type]
        b = unit.block
        image = render_shard(
            b.y0,
            b.x0,
            b.h,
            b.w,
            frames,
            [np.ascontiguousarray(a) for a in data["images"][: len(ks)]],
            [np.ascontiguousarray(a) for a in data["valids"][: len(ks)]],
            data["labels"],
            plan.scale,
            plan.sigma_low,
        )
        return {"image": image, "nframes": len(ks)}

    def write(self, unit: Unit, result: dict[str, Any]) -> dict[str, Any]:
        plan = self.plans[unit.raster]
        write_block(
            group_at(open_store(plan.store, mode="r+"), plan.group),
            np.asarray(result["image"]),
            unit.block.y0,
            unit.block.x0,
            "image",
        )
        return {"windows": int(result["nframes"])}

    def size_bytes(self, unit: Unit) -> int:
        h, w = self.plans[unit.raster].frame_hw
        return 4 * h * w * 4 + unit.block.h * unit.block.w * 3
