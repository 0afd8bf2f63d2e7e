"""Crossed-polar (XPL) to plane-polarised (PPL) registration and channel stacking.

Each XPL capture (taken at another stage angle) is aligned to its PPL reference with
SIFT keypoints on contrast-equalised images and a RANSAC affine fit (OpenCV), then
optionally refined by ECC (intensity-based, OpenCV ``findTransformECC``) on band-passed
log images. Under crossed polars isotropic phases go dark and anisotropic grains change
brightness, so only the fine relief (pits, scratches, grain rims, polish texture) is
shared between the two modalities; the band-pass keeps that and drops grain-level
brightness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from engine.errors import LodeInputError
from engine.stitch.register import to_grey

if TYPE_CHECKING:
    from engine.io.sources import SectionSource


@dataclass(frozen=True)
class XplOptions:
    ratio: float = 0.8
    ransac_px: float = 3.0
    min_inliers: int = 10
    max_features: int = 6000
    clahe_clip: float = 3.0
    ecc: bool = True
    ecc_motion: str = "euclidean"
    ecc_band: tuple[float, float] = (1.5, 6.0)
    ecc_iterations: int = 200
    ecc_max_step_px: float = 3.0


@dataclass
class XplRegistration:
    """``M`` (2×3) maps XPL capture pixels to PPL pixels."""

    M: np.ndarray
    matches: int
    inliers: int
    rms_px: float
    refined: bool = False

    @property
    def rotation_deg(self) -> float:
        return math.degrees(math.atan2(self.M[1, 0], self.M[0, 0]))


def _equalised(img: np.ndarray, clip: float) -> np.ndarray:
    grey = to_grey(img)
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(grey)


def register_xpl(
    ppl: np.ndarray, xpl: np.ndarray, options: XplOptions = XplOptions(), source: str = "xpl"
) -> XplRegistration:
    """Affine transform from an XPL capture to its PPL reference; raises naming ``source`` on failure."""
    a, b = _equalised(ppl, options.clahe_clip), _equalised(xpl, options.clahe_clip)
    sift = cv2.SIFT_create(nfeatures=options.max_features)  # type: ignore[attr-defined]  # in OpenCV, not its stubs
    ka, da = sift.detectAndCompute(a, None)
    kb, db = sift.detectAndCompute(b, None)
    if da is None or db is None or len(ka) < options.min_inliers or len(kb) < options.min_inliers:
        raise LodeInputError(source, f"too few keypoints to register to PPL ({len(ka)} / {len(kb)})")
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(db, da, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < options.ratio * n.distance]
    if len(good) < options.min_inliers:
        raise LodeInputError(source, f"only {len(good)} keypoint matches with the PPL image")
    src = np.array([kb[m.queryIdx].pt for m in good], np.float32)
    dst = np.array([ka[m.trainIdx].pt for m in good], np.float32)
    M, inl = cv2.estimateAffine2D(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=options.ransac_px,
        maxIters=5000,
        confidence=0.999,
        refineIters=20,
    )
    n_in = int(inl.sum()) if inl is not None else 0
    if M is None or n_in < options.min_inliers:
        raise LodeInputError(source, f"no consistent affine transform to PPL ({n_in} inliers of {len(good)})")
    sel = inl.ravel().astype(bool)
    resid = src[sel] @ M[:, :2].T + M[:, 2] - dst[sel]
    reg = XplRegistration(M.astype(np.float64), len(good), n_in, float(np.sqrt((resid**2).sum(1).mean())))
    if options.ecc:
        reg = _refine_ecc(ppl, xpl, reg, options)
    return reg


def _band_pass(img: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    g = np.log1p(to_grey(img).astype(np.float32))
    d = cv2.GaussianBlur(g, (0, 0), band[0]) - cv2.GaussianBlur(g, (0, 0), band[1])
    return d / (d.std() + 1e-6)


def _refine_ecc(ppl: np.ndarray, xpl: np.ndarray, reg: XplRegistration, options: XplOptions) -> XplRegistration:
    """ECC warp ``W`` maps PPL pixels to XPL pixels (the inverse of ``M``); a diverging refinement is dropped."""
    motion = {"euclidean": cv2.MOTION_EUCLIDEAN, "affine": cv2.MOTION_AFFINE}.get(options.ecc_motion)
    if motion is None:
        raise ValueError(f"unknown ECC motion {options.ecc_motion!r}; use 'euclidean' or 'affine'")
    warp = cv2.invertAffineTransform(reg.M).astype(np.float32)
    if motion == cv2.MOTION_EUCLIDEAN:
        th = math.atan2(warp[1, 0], warp[0, 0])
        warp[:, :2] = [[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]]
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, options.ecc_iterations, 1e-7)
    try:
        _, warp = cv2.findTransformECC(
            _band_pass(ppl, options.ecc_band), _band_pass(xpl, options.ecc_band), warp, motion, crit, None, 1
        )  # type: ignore[call-overload]  # stubs: no None mask
    except cv2.error:
        return reg
    M = cv2.invertAffineTransform(warp).astype(np.float64)
    h, w = ppl.shape[:2]
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    step = np.abs(corners @ (M - reg.M)[:, :2].T + (M - reg.M)[:, 2]).max()
    if not np.isfinite(step) or step > options.ecc_max_step_px:
        return reg
    return XplRegistration(M, reg.matches, reg.inliers, reg.rms_px, refined=True)


def _rows(M: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    (a, b, c), (d, e, f) = M.tolist()
    return (a, b, c), (d, e, f)


def warp_to_ppl(xpl: np.ndarray, M: np.ndarray, ppl_hw: tuple[int, int]) -> np.ndarray:
    """Resample an XPL capture onto the PPL pixel grid (zeros outside the XPL field)."""
    h, w = ppl_hw
    return cv2.warpAffine(xpl, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def xpl_channel_names(angles: Sequence[float | str], mode: str = "grey") -> list[str]:
    names = [f"XPL{a:g}" if not isinstance(a, str) else f"XPL{a}" for a in angles]
    if mode == "grey":
        return names
    if mode == "rgb":
        return [f"{n}.{c}" for n in names for c in "RGB"]
    raise ValueError(f"unknown XPL channel mode {mode!r}; use 'grey' or 'rgb'")


def stack_channels(
    ppl: np.ndarray, xpl: Sequence[np.ndarray], transforms: Sequence[np.ndarray], mode: str = "grey"
) -> np.ndarray:
    """``(h, w, 3 + k)`` (grey) or ``(h, w, 3 + 3k)`` (rgb) uint8: PPL RGB then each registered XPL image."""
    if len(xpl) != len(transforms):
        raise ValueError(f"{len(xpl)} XPL images but {len(transforms)} transforms")
    xpl_channel_names(range(len(xpl)), mode)
    hw = ppl.shape[:2]
    chans = [ppl[..., :3]]
    for img, M in zip(xpl, transforms):
        warped = warp_to_ppl(img, M, hw)
        chans.append(
            to_grey(warped)[..., None]
            if mode == "grey" and warped.ndim == 3
            else (warped[..., None] if warped.ndim == 2 else warped)
        )
    return np.concatenate(chans, axis=-1)


def register_stack(
    ppl: np.ndarray, xpl: Sequence[np.ndarray], options: XplOptions = XplOptions(), sources: Sequence[str] | None = None
) -> list[XplRegistration]:
    sources = list(sources or [f"xpl[{i}]" for i in range(len(xpl))])
    return [register_xpl(ppl, img, options, s) for img, s in zip(xpl, sources)]


@dataclass(frozen=True)
class XplStackSource:
    """A section source whose pixels are its PPL RGB followed by its registered XPL captures (grey).

    ``transforms[k]`` maps XPL capture ``files[k]`` to PPL pixels; reads warp only the region asked for.
    """

    base: SectionSource
    files: tuple[str, ...]
    transforms: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...]

    section = property(lambda self: self.base.section)
    kind = property(lambda self: self.base.kind)
    path = property(lambda self: self.base.path)
    group = property(lambda self: self.base.group)
    height = property(lambda self: self.base.height)
    width = property(lambda self: self.base.width)
    pixel_size_um = property(lambda self: self.base.pixel_size_um)

    @property
    def channels(self) -> int:
        return self.base.channels + len(self.files)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        from engine.io.images import read_rgb

        chans = [self.base.read(y0, y1, x0, x1)]
        shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        for f, M in zip(self.files, self.transforms):
            local = (shift @ np.vstack([np.asarray(M), [0.0, 0.0, 1.0]]))[:2]
            chans.append(to_grey(warp_to_ppl(read_rgb(f), local, (y1 - y0, x1 - x0)))[None])
        return np.concatenate(chans, axis=0)


def xpl_files(folder: str | Path) -> list[Path]:
    """XPL captures of one section, in channel order (sorted file names, e.g. ``000.png``, ``015.png``)."""
    from engine.io.images import list_images

    files = list_images(folder)
    if not files:
        raise LodeInputError(folder, "no XPL captures")
    return files


def attach_xpl(
    sources: Sequence[SectionSource], xpl_root: str | Path, channels: Sequence[str], options: XplOptions = XplOptions()
) -> list[XplStackSource]:
    """Register ``<xpl_root>/<section>/*`` to each section's PPL image; channel names must match ``channels``."""
    out = []
    for s in sources:
        if s.kind != "image":
            raise LodeInputError(s.path, "XPL channels need image-file sections (register them before stitching)")
        folder = Path(xpl_root) / s.section
        files = xpl_files(folder)
        names = xpl_channel_names([f.stem for f in files])
        if names != list(channels):
            raise LodeInputError(folder, f"XPL captures give channels {names}; the model expects {list(channels)}")
        ppl = np.moveaxis(s.read(0, s.height, 0, s.width), 0, -1)
        from engine.io.images import read_rgb

        regs = [register_xpl(ppl, read_rgb(f), options, str(f)) for f in files]
        out.append(XplStackSource(s, tuple(str(f) for f in files), tuple(_rows(r.M) for r in regs)))
    return out


def load_registered(
    ppl: np.ndarray, folder: str | Path, options: XplOptions = XplOptions()
) -> tuple[np.ndarray, list[str]]:
    """PPL ``(h, w, 3)`` plus the registered XPL captures of ``folder``: ``(h, w, 3 + k)`` and channel names."""
    from engine.io.images import read_rgb

    files = xpl_files(folder)
    regs = [register_xpl(ppl, read_rgb(f), options, str(f)) for f in files]
    return (
        stack_channels(ppl, [read_rgb(f) for f in files], [r.M for r in regs]),
        xpl_channel_names([f.stem for f in files]),
    )
