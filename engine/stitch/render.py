"""Render the output shards of a panorama from the frames that touch them, on the raster runner.

Blend weights come from the low-resolution seam label map. ``multiband`` (the default) gives
each pixel to one frame (the label map's owner, upsampled and cut by the frames' valid masks;
a pixel whose owner does not cover it goes to the covering frame it lies deepest in; near the
seams, when the section refined them, the full-resolution cut's owner comes first) and blends
Laplacian pyramids of the gain-corrected frames with Gaussian pyramids of those hard masks
(Burt & Adelson): low frequencies, where exposure steps live, mix over about ``2**levels`` px,
fine detail switches within a pixel or two. Each frame's invalid pixels are first filled by a
push-pull extension of its valid ones, so frame borders near a seam leave no dark fringe.
``feather`` blurs each frame's low-res ownership (a seam a few low-res pixels wide) into a
weight. Shards share no state: a multiband shard is computed over the shard plus a halo on a
pyramid grid aligned to the panorama, then cropped, so neighbours agree at their edges.
:class:`RenderStage` is the block stage: its units are the shards of each section's
panorama; a read loads the corrected frames that touch the shard (and its halo) from the
section's frame cache, compute is :func:`render_shard`, write puts the shard into the partial group.
It runs in actors (a model stage) that pick their device in their own process: the frames are
warped with kornia on that device (:class:`~engine.stitch.warp.FrameWarper`), the pyramids are
built on the CPU.
"""

from __future__ import annotations

import io
import mmap
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from engine.errors import LodeInputError
from engine.io import fs
from engine.io.layout import SEAM_LABELS, SEAM_REFINED, array_at, group_at
from engine.io.ome import open_store, write_block
from engine.raster import Block, BlockStage, Unit, block_grid, units_of
from engine.raster.stage import own_pages_for_large_blocks
from engine.stitch.register import apply, compose, invert, translation
from engine.stitch.warp import FrameWarper


@dataclass(frozen=True)
class ShardFrame:
    """A frame's index, its frame→panorama transform (2×3 affine or 3×3 homography) and its per-channel gain."""

    index: int
    M: np.ndarray
    gain: np.ndarray


def frame_box(M: np.ndarray, hw: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = hw
    c = apply(M, np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64))
    return float(c[:, 0].min()), float(c[:, 1].min()), float(c[:, 0].max()), float(c[:, 1].max())


def source_window(
    M: np.ndarray, hw: tuple[int, int], box: tuple[int, int, int, int], reach: int = 8
) -> tuple[slice, slice] | None:
    """The rows and columns of a frame of size ``hw`` placed by ``M`` that warping it into the
    panorama box ``(y0, x0, h, w)`` can read: the box within ``reach`` px of the frame's bounding box,
    mapped back into the frame (its corners bound it: ``M`` maps lines to lines), grown by ``reach``
    px (the cubic kernel reaches 2) and clipped to the frame; ``None`` when the render reads none of it."""
    y0, x0, h, w = box
    bx0, by0, bx1, by1 = frame_box(M, hw)
    ys, ye = max(y0, int(np.floor(by0)) - reach), min(y0 + h, int(np.ceil(by1)) + reach + 1)
    xs, xe = max(x0, int(np.floor(bx0)) - reach), min(x0 + w, int(np.ceil(bx1)) + reach + 1)
    if ye <= ys or xe <= xs:
        return None
    c = apply(invert(M), np.array([[xs, ys], [xe, ys], [xe, ye], [xs, ye]], np.float64))
    r0, r1 = max(0, int(np.floor(c[:, 1].min())) - reach), min(hw[0], int(np.ceil(c[:, 1].max())) + reach + 1)
    c0, c1 = max(0, int(np.floor(c[:, 0].min())) - reach), min(hw[1], int(np.ceil(c[:, 0].max())) + reach + 1)
    return (slice(r0, r1), slice(c0, c1)) if r1 > r0 and c1 > c0 else None


def untouched_zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Zeros of ``shape`` on fresh anonymous pages, which take memory only where written (or read):
    frames of which a render reads windows are held at the size of those windows."""
    n = int(np.prod(shape))
    pages = mmap.mmap(-1, max(n, 1) * np.dtype(dtype).itemsize, flags=mmap.MAP_PRIVATE)
    return np.frombuffer(pages, dtype, count=n).reshape(shape)


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


Blend = Literal["multiband", "feather"]
BLENDS: tuple[str, ...] = ("multiband", "feather")


def auto_blend_levels(frame_hw: tuple[int, int]) -> int:
    """Pyramid levels whose coarsest band (about ``2**levels`` px) is a twelfth of the frame's short
    side, at most 6 (a 256 px halo per shard): a frame overlap of 10-25 % holds the blend."""
    return int(np.clip(np.rint(np.log2(min(frame_hw) / 12)), 1, 6))


def blend_halo(levels: int) -> int:
    """Margin (px) around a shard past which a ``levels``-level pyramid no longer reaches it."""
    return 4 << levels


def blend_box(y0: int, x0: int, h: int, w: int, levels: int) -> tuple[int, int, int, int]:
    """``(y0, x0, h, w)`` of the box a multiband shard is computed over: the shard plus
    :func:`blend_halo`, its corners on multiples of ``2**levels`` in the panorama (every shard's
    pyramid samples the same grid)."""
    step = 1 << levels
    halo = blend_halo(levels)
    by0, bx0 = (y0 - halo) // step * step, (x0 - halo) // step * step
    by1, bx1 = -(-(y0 + h + halo) // step) * step, -(-(x0 + w + halo) // step) * step
    return by0, bx0, by1 - by0, bx1 - bx0


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
    blend: Blend = "multiband",
    levels: int = 4,
    refined: np.ndarray | None = None,
    release: bool = False,
    warper: FrameWarper | None = None,
) -> np.ndarray:
    """The shard ``(3, h, w)`` uint8 at panorama offset ``(y0, x0)``.

    ``frames[i]`` places ``images[i]`` ``(fh, fw, 3)`` uint8 and ``valids[i]`` ``(fh, fw)`` uint8;
    ``labels`` ``(Lh, Lw)`` is the seam label map at ``scale``. ``sigma_low`` is the feather's
    blur (low-res px), ``levels`` the multiband pyramid's depth; for ``multiband`` the frames
    must cover the shard's :func:`blend_box`, and ``refined`` (``multiband`` only), the
    full-resolution owners near the seams over that box (:func:`read_box`; -1 elsewhere),
    overrides the owner from ``labels`` where the frame it names is valid. ``release`` (``multiband``):
    the lists ``images`` and ``valids`` are emptied once the frames are warped (see :func:`_multiband`).
    ``warper`` warps the frames (images bicubic, masks nearest; default: on the CPU).
    """
    warper = warper or FrameWarper()
    if blend == "feather":
        return _feather(y0, x0, h, w, frames, images, valids, labels, scale, sigma_low, warper)
    by0, bx0, bh, bw = blend_box(y0, x0, h, w, levels)
    out = _multiband(
        by0, bx0, bh, bw, frames, images, valids, labels, scale, warper, levels, refined=refined, release=release
    )
    crop = out[y0 - by0 : y0 - by0 + h, x0 - bx0 : x0 - bx0 + w]
    return np.clip(np.rint(crop), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def _feather(
    y0: int,
    x0: int,
    h: int,
    w: int,
    frames: list[ShardFrame],
    images: list[np.ndarray],
    valids: list[np.ndarray],
    labels: np.ndarray,
    scale: float,
    sigma_low: float,
    warper: FrameWarper,
) -> np.ndarray:
    """The feathered shard ``(3, h, w)`` uint8: blurred low-res ownership × valid mask as weights."""
    acc = np.zeros((h, w, 3), np.float32)
    wsum = np.zeros((h, w), np.float32)
    acc_any = np.zeros((h, w, 3), np.float32)
    n_any = np.zeros((h, w), np.float32)
    for f, img, valid in zip(frames, images, valids):
        F = compose(translation(-x0, -y0), f.M)
        warped, v = warper.many([(img, "bicubic"), (valid, "nearest")], F, (w, h))
        v = v > 0
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


def _gaussian(a: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [a]
    for _ in range(levels):
        out.append(cv2.pyrDown(out[-1]))
    return out


def _up(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    return cv2.pyrUp(a, dstsize=(like.shape[1], like.shape[0]))


def _weights(valid: np.ndarray, levels: int) -> list[np.ndarray]:
    """The Gaussian pyramid of ``valid`` ``(h, w)`` bool as weights, ``levels`` deep: float32 but
    for the full-resolution level, ``valid`` itself (a weight of 0 or 1)."""
    pyramid = _gaussian(valid.astype(np.float32), levels)
    pyramid[0] = valid
    return pyramid


def _pushpull(a: np.ndarray, wts: list[np.ndarray], own: bool = False) -> np.ndarray:
    """The push-pull extension ``(h, w)`` float32 of one channel ``a`` ``(h, w)`` float32 from its valid
    pixels, whose :func:`_weights` (at least 2 levels) are ``wts``: a normalised Gaussian pyramid,
    coarse to fine; each pixel takes the next level up, upsampled (callers take the pixels outside
    the valid ones). ``own``: ``a`` is the caller's to overwrite."""
    h, w = a.shape
    sums = _gaussian(np.multiply(a, wts[0], out=a if own else None), len(wts) - 1)
    del a
    f = sums[-1] / np.maximum(wts[-1], 1e-6)
    for s, c in zip(reversed(sums[1:-1]), reversed(wts[1:-1])):
        f = np.where(c > 1e-3, s / np.maximum(c, 1e-6), _up(f, s))
    del sums
    return cv2.pyrUp(f, dstsize=(w, h))


class _Extension:
    """How a frame is continued past its ``valid`` ``(h, w)`` bool pixels, channel by channel
    (:meth:`extend`): where other frames are valid, by their mean plus the smooth (push-pull)
    extension of the frame minus that mean, so detail runs on across the frame's border; elsewhere
    by the push-pull extension of the frame. ``count`` ``(h, w)`` uint8 is the number of valid
    frames, this one included; the masks and weight pyramids are the channels' to share."""

    def __init__(self, valid: np.ndarray, count: np.ndarray, levels: int):
        self.valid = valid
        self.per = count - valid
        self.seen = ~valid & (self.per > 0)
        self.alone = ~valid & (self.per <= 0)
        self.shared = valid & (self.per > 0)
        np.maximum(self.per, 1, out=self.per)
        self.w_seen = _weights(self.shared, levels) if self.seen.any() else None
        self.w_alone = _weights(valid, levels) if self.alone.any() else None

    def extend(self, a: np.ndarray, total: np.ndarray) -> np.ndarray:
        """One channel ``a`` ``(h, w)`` float32 of the frame, continued in place; ``total`` ``(h, w)``:
        that channel's sum over all valid frames."""
        if self.w_seen is not None:
            others = a * self.valid
            np.subtract(total, others, out=others)
            others /= self.per
            filled = _pushpull(a - others, self.w_seen, own=True)
            filled += others
            del others
            np.copyto(a, filled, where=self.seen)
            del filled
        if self.w_alone is not None:  # its valid pixels, all the push-pull reads, are as they came
            np.copyto(a, _pushpull(a, self.w_alone), where=self.alone)
        return a


def _footprint(M: np.ndarray, hw: tuple[int, int], h: int, w: int, y0: int, x0: int) -> tuple[slice, slice] | None:
    """The part of the box ``(y0, x0, h, w)`` that a frame of size ``hw`` placed by ``M`` can reach."""
    bx0, by0, bx1, by1 = frame_box(M, hw)
    ys, ye = max(0, int(np.floor(by0)) - y0 - 2), min(h, int(np.ceil(by1)) - y0 + 3)
    xs, xe = max(0, int(np.floor(bx0)) - x0 - 2), min(w, int(np.ceil(bx1)) - x0 + 3)
    return (slice(ys, ye), slice(xs, xe)) if ye > ys and xe > xs else None


def _around(mask: np.ndarray, margin: int, step: int) -> tuple[slice, slice]:
    """The box around ``mask``'s pixels grown by ``margin``, its sides on multiples of ``step``
    (``mask``'s own sides are), within ``mask``."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    y0, x0 = max(0, (rows[0] - margin) // step * step), max(0, (cols[0] - margin) // step * step)
    y1, x1 = min(h, -(-(rows[-1] + 1 + margin) // step) * step), min(w, -(-(cols[-1] + 1 + margin) // step) * step)
    return slice(y0, y1), slice(x0, x1)


def _multiband(
    y0: int,
    x0: int,
    h: int,
    w: int,
    frames: list[ShardFrame],
    images: list[np.ndarray],
    valids: list[np.ndarray],
    labels: np.ndarray,
    scale: float,
    warper: FrameWarper,
    levels: int,
    margin: int | None = None,
    refined: np.ndarray | None = None,
    release: bool = False,
) -> np.ndarray:
    """The multiband blend ``(h, w, 3)`` float32 over the box at ``(y0, x0)`` (sides multiples of
    ``2**levels``), 0 where no frame is valid. A pixel goes to the frame ``refined`` ``(h, w)`` int16
    names there if that frame is valid, else to its owner in ``labels``.

    Each frame is warped over its footprint in the box only, and its pyramids are built over the
    box around the pixels it owns grown by ``margin`` (default: the reach of the coarsest band,
    :func:`blend_halo` plus one coarse pixel's upsampling): past that its weight is 0 at every level.
    ``release``: ``images`` and ``valids`` are emptied once every frame is warped (the caller holds no
    other reference to them), so the pyramids are built without them in memory."""
    best = np.full((h, w), -1.0, np.float32)
    owner = np.full((h, w), -1, np.int16)
    total = np.zeros((h, w, 3), np.float32)
    count = np.zeros((h, w), np.uint8)
    warped: list[tuple[int, ShardFrame, tuple[slice, slice], np.ndarray, np.ndarray]] = []
    depths: list[tuple[np.ndarray, np.ndarray]] = []  # (valid, its depth): frames mostly share one mask
    for i, (f, img, valid) in enumerate(zip(frames, images, valids)):
        sl = _footprint(f.M, valid.shape, h, w, y0, x0)
        if sl is None:
            continue
        sy, sx = sl
        fh, fw, fy, fx = sy.stop - sy.start, sx.stop - sx.start, y0 + sy.start, x0 + sx.start
        F = compose(translation(-fx, -fy), f.M)
        dist = next((d for m, d in depths if np.array_equal(m, valid)), None)
        if dist is None:
            inside = cv2.copyMakeBorder((valid > 0).astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
            dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)[1:-1, 1:-1]
            depths.append((valid, dist))
        im, v, depth = warper.many([(img, "bicubic"), (valid, "nearest"), (dist, "bilinear")], F, (fw, fh))
        v = v > 0
        score = seam_weight(labels, scale, f.index, fy, fx, fh, fw, 0.0) * 1e4 + depth
        if refined is not None:
            score += (refined[sl] == f.index) * np.float32(1e7)
        score = np.where(v, score, -1.0)
        better = score > best[sl]
        np.copyto(best[sl], score, where=better)
        np.copyto(owner[sl], i, where=better)
        total[sl] += im * (f.gain.astype(np.float32) * v[..., None])
        count[sl] += v
        warped.append((i, f, sl, im, v))
        del depth, score, better
    img = valid = None  # type: ignore[assignment]  # the last frame's, as the lists' go
    if release:
        images.clear()
        valids.clear()
    margin = blend_halo(levels) + (2 << levels) if margin is None else margin
    del best, depths
    owned: list[tuple[int, ShardFrame, slice, slice, tuple[Any, np.ndarray, np.ndarray] | None]] = []
    while warped:  # each frame keeps only its warp over the box its pyramids are built on
        i, f, sl, im, v = warped.pop(0)
        mask = owner == i
        if not mask.any():
            continue
        cy, cx = _around(mask, margin, 1 << levels)
        iy = slice(max(cy.start, sl[0].start), min(cy.stop, sl[0].stop))
        ix = slice(max(cx.start, sl[1].start), min(cx.stop, sl[1].stop))
        part = None
        if iy.stop > iy.start and ix.stop > ix.start:
            src = (
                slice(iy.start - sl[0].start, iy.stop - sl[0].start),
                slice(ix.start - sl[1].start, ix.stop - sl[1].start),
            )
            dst = (slice(iy.start - cy.start, iy.stop - cy.start), slice(ix.start - cx.start, ix.stop - cx.start))
            part = (dst, np.ascontiguousarray(im[src]), np.ascontiguousarray(v[src]))
        owned.append((i, f, cy, cx, part))
        del im, v, mask
    acc = [np.zeros((h >> lv, w >> lv, 3), np.float32) for lv in range(levels + 1)]
    # the masks partition the owned pixels, so their full-resolution sum is owner >= 0: only the coarser are summed
    wsum = [(owner >= 0).astype(np.float32)] + [np.zeros((h >> lv, w >> lv), np.float32) for lv in range(1, levels + 1)]
    while owned:
        i, f, cy, cx, part = owned.pop(0)
        va = np.zeros((cy.stop - cy.start, cx.stop - cx.start), bool)
        if part is not None:
            va[part[0]] = part[2]
        ext = _Extension(va, count[cy, cx], levels + 2)
        del va
        masks = _gaussian((owner[cy, cx] == i).astype(np.float32), levels)
        ats = [(slice(cy.start >> lv, cy.stop >> lv), slice(cx.start >> lv, cx.stop >> lv)) for lv in range(levels + 1)]
        for lv in range(1, levels + 1):
            wsum[lv][ats[lv]] += masks[lv]
        gain = f.gain.astype(np.float32)
        for c in range(3):  # channel by channel: a third of the working memory of all three at once
            a = np.zeros(ext.valid.shape, np.float32)
            if part is not None:
                np.multiply(part[1][..., c], gain[c], out=a[part[0]])
            g = _gaussian(ext.extend(a, total[cy, cx, c]), levels)
            del a
            for lv, m in enumerate(masks):
                band = g.pop(0)  # the Laplacian band is made in place of its Gaussian level, which is then let go
                if g:
                    np.subtract(band, _up(g[0], band), out=band)
                band *= m
                acc[lv][ats[lv]][..., c] += band
                del band
        del ext, masks, part
    del total, count
    out = acc[-1] / np.maximum(wsum[-1], 1e-6)[..., None]
    for band_sum, s in zip(reversed(acc[:-1]), reversed(wsum[:-1])):
        out = _up(out, band_sum) + band_sum / np.maximum(s, 1e-6)[..., None]
    return out * (owner >= 0)[..., None]


def read_box(arr: Any, y0: int, x0: int, h: int, w: int, fill: int = -1) -> np.ndarray:
    """The box ``(h, w)`` at ``(y0, x0)`` of the 2-D array ``arr`` (numpy or zarr, read only there),
    ``fill`` where the box lies outside it."""
    out = np.full((h, w), fill, arr.dtype)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, arr.shape[0]), min(x0 + w, arr.shape[1])
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = arr[ys:ye, xs:xe]
    return out


def frame_path(work: str, k: int, kind: str) -> str:
    """Where the correction step caches frame ``k``'s ``image`` (h, w, 3) or ``valid`` (h, w) as .npy."""
    return fs.join(work, "frames", f"{k:05d}.{kind}.npy")


def load_frame(path: str) -> np.ndarray:
    """A corrected frame's cached array (:func:`frame_path`); a local file is mapped read-only, so
    only the parts of it that are read are read."""
    try:
        if not fs.is_uri(path):
            return np.load(fs.local(path), mmap_mode="r")
        return np.load(io.BytesIO(fs.read_bytes(path)))
    except (OSError, ValueError) as exc:
        raise LodeInputError(path, f"corrected frame cache unreadable: {exc}") from exc


@dataclass(frozen=True)
class RenderPlan:
    """How one section's panorama is rendered: frame placement and gains, seam map scale, the
    blend (``multiband`` with ``blend_levels``, ``None``: from the frame size; or ``feather`` with
    ``sigma_low``), the partial group written and the work folder that holds the corrected frames;
    ``seam_refined``: the partial group holds the full-resolution owners near the seams
    (``SEAM_REFINED``, :mod:`engine.stitch.refine`), which the multiband render follows."""

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
    blend: Blend = "multiband"
    blend_levels: int | None = None
    seam_refined: bool = False

    @property
    def blocks(self) -> list[Block]:
        return block_grid(*self.shape, self.shard)

    @property
    def units(self) -> list[Unit]:
        return units_of(self.section, self.blocks)

    @property
    def levels(self) -> int:
        """The multiband pyramid's depth: ``blend_levels``, else :func:`auto_blend_levels`."""
        return auto_blend_levels(self.frame_hw) if self.blend_levels is None else self.blend_levels

    def box(self, b: Block) -> tuple[int, int, int, int]:
        """``(y0, x0, h, w)`` of the panorama box that block ``b``'s render reads."""
        return (b.y0, b.x0, b.h, b.w) if self.blend == "feather" else blend_box(b.y0, b.x0, b.h, b.w, self.levels)

    def touching(self, b: Block) -> list[int]:
        """Indices of the placed frames that touch the box block ``b``'s render reads."""
        box = self.box(b)
        return [k for k, m in enumerate(self.mats) if m is not None and touches(m, self.frame_hw, *box)]


class RenderStage(BlockStage):
    """Shards of the panoramas of ``plans`` (by section): corrected frames in → RGB shard out."""

    name = "stitch-render"
    model = True
    task_cpus = 1.0

    def __init__(self, plans: dict[str, RenderPlan]):
        self.plans = plans
        self._warper: FrameWarper | None = None

    def setup(self, device: str) -> None:
        own_pages_for_large_blocks()
        self._warper = FrameWarper(device)

    def windows(self, unit: Unit) -> list[tuple[int, tuple[slice, slice] | None]]:
        """Each frame touching ``unit``'s box with the window of it the render reads (``None``: none)."""
        plan = self.plans[unit.raster]
        box = plan.box(unit.block)
        return [(k, source_window(plan.mats[k], plan.frame_hw, box)) for k in plan.touching(unit.block)]  # type: ignore[arg-type]

    def read(self, unit: Unit) -> dict[str, Any]:
        """The unit's frames as the windows of them its render reads, packed one after another
        (``pixels``, flat uint8; ``windows`` ``(n + 1, 4)``: each frame's rows and columns), so a read
        that travels (GPU actors read in tasks) carries those windows alone; each distinct valid mask
        whole, once; the section's seam labels and refined owners."""
        plan = self.plans[unit.raster]
        h, w = plan.frame_hw
        frames = self.windows(unit)
        bounds = np.zeros((len(frames) + 1, 4), np.int64)
        for i, (_, win) in enumerate(frames):
            if win is not None:
                bounds[i] = win[0].start, win[0].stop, win[1].start, win[1].stop
        sizes = (bounds[:, 1] - bounds[:, 0]) * (bounds[:, 3] - bounds[:, 2]) * 3
        pixels = np.empty(int(sizes.sum()), np.uint8)
        valids: list[np.ndarray] = []  # each distinct mask once: a section's frames mostly share one
        valid_of = []
        at = 0
        for i, (k, win) in enumerate(frames):
            if win is not None:
                r0, r1, c0, c1 = bounds[i]
                pixels[at : at + sizes[i]].reshape(r1 - r0, c1 - c0, 3)[:] = load_frame(
                    frame_path(plan.work, k, "image")
                )[win]
                at += int(sizes[i])
            v = load_frame(frame_path(plan.work, k, "valid"))
            j = next((j for j, u in enumerate(valids) if np.array_equal(u, v)), len(valids))
            valids += [v] if j == len(valids) else []
            valid_of.append(j)
        root = open_store(plan.store)
        labels = array_at(root, f"{plan.group}/{SEAM_LABELS}")[:]
        refined = (
            read_box(array_at(root, f"{plan.group}/{SEAM_REFINED}"), *plan.box(unit.block))
            if plan.seam_refined
            else np.full((1, 1), -1, np.int16)
        )
        return {
            "frames": np.array([k for k, _ in frames] + [-1], np.int64),
            "pixels": pixels,
            "windows": bounds,
            "valids": np.stack(valids) if valids else np.zeros((1, h, w), np.uint8),
            "valid_of": np.array(valid_of + [-1], np.int64),
            "labels": labels,
            "refined": refined,
        }

    def compute(self, unit: Unit, data: dict[str, Any]) -> dict[str, Any]:
        plan = self.plans[unit.raster]
        ks = [int(k) for k in data["frames"][:-1]]
        frames = [ShardFrame(k, plan.mats[k], plan.gains[k]) for k in ks]  # type: ignore[arg-type]
        b = unit.block
        frame_images = self._frames(plan.frame_hw, data.pop("pixels"), data["windows"][: len(ks)])
        valids = data.pop("valids")
        frame_valids = [np.ascontiguousarray(valids[j]) for j in data["valid_of"][:-1]]
        del valids  # the frames' windows go once warped (release)
        image = render_shard(
            b.y0,
            b.x0,
            b.h,
            b.w,
            frames,
            frame_images,
            frame_valids,
            data["labels"],
            plan.scale,
            plan.sigma_low,
            blend=plan.blend,
            levels=plan.levels,
            refined=np.ascontiguousarray(data["refined"]) if plan.seam_refined else None,
            release=True,
            warper=self._warper,
        )
        return {"image": image, "nframes": len(ks)}

    @staticmethod
    def _frames(hw: tuple[int, int], pixels: np.ndarray, windows: np.ndarray) -> list[np.ndarray]:
        """Whole frames ``(h, w, 3)`` holding the packed ``windows`` of :meth:`read` where they lie, on
        untouched pages (each takes memory for its window alone)."""
        images = untouched_zeros((max(len(windows), 1), *hw, 3), np.uint8)
        at = 0
        for image, (r0, r1, c0, c1) in zip(images, windows):
            n = int((r1 - r0) * (c1 - c0) * 3)
            if n:
                image[r0:r1, c0:c1] = pixels[at : at + n].reshape(r1 - r0, c1 - c0, 3)
            at += n
        return list(images[: len(windows)])

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
        plan = self.plans[unit.raster]
        h, w = plan.frame_hw
        _, _, bh, bw = plan.box(unit.block)
        wins = [win for _, win in self.windows(unit) if win is not None]
        frames = sum((r.stop - r.start) * (c.stop - c.start) * 3 for r, c in wins) + h * w
        return frames + unit.block.h * unit.block.w * 3 + (2 * bh * bw if plan.seam_refined else 0)
