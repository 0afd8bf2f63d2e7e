"""Synthetic microscope captures of a polished section with exact truth.

A large RGB source image (any ``(H, W, 3)`` uint8 array, or :func:`textured_section`)
is photographed as an R×C grid of overlapping frames. Every frame has a known
similarity transform from its ideal (undistorted) pixel grid to source pixels, and
goes through the same Brown–Conrady lens, vignetting, exposure and white-balance
drift, dark offset, noise and JPEG. Calibration frames (flat, dark, checkerboard
views) go through the same camera, so calibration can be fitted rather than given.

Conventions: pixel centres sit at integer coordinates; a transform ``M`` (2×3) maps
``(x, y, 1)`` of a frame to ``(x, y)`` of the source.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.io.images import write_image

EPOXY_RGB = (58, 60, 66)


@dataclass(frozen=True)
class Lens:
    """Pinhole camera matrix and Brown–Conrady coefficients ``(k1, k2, p1, p2, k3)``."""

    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def camera_matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    @property
    def dist_coeffs(self) -> np.ndarray:
        return np.asarray(self.dist, dtype=np.float64)

    @classmethod
    def centred(cls, frame_hw: tuple[int, int], dist=(0.0, 0.0, 0.0, 0.0, 0.0), focal: float = 1.0) -> Lens:
        h, w = frame_hw
        return cls(focal * w, focal * w, (w - 1) / 2, (h - 1) / 2, tuple(float(d) for d in dist))  # type: ignore[arg-type]


@dataclass(frozen=True)
class CaptureConfig:
    """How a grid of frames is captured. Zeros switch a degradation off."""

    rows: int = 3
    cols: int = 3
    frame_hw: tuple[int, int] = (200, 300)
    overlap: float = 0.25
    jitter_px: float = 4.0
    rotation_deg: float = 0.3
    scale_jitter: float = 0.002
    distortion: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    vignetting: float = 0.0
    exposure_drift: float = 0.0
    wb_drift: float = 0.0
    dark_level: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int | None = None
    blank_frames: tuple[int, ...] = ()
    isolated_frames: tuple[int, ...] = ()
    seed: int = 0

    @property
    def step(self) -> tuple[float, float]:
        h, w = self.frame_hw
        return ((1 - self.overlap) * h, (1 - self.overlap) * w)

    @property
    def mosaic_hw(self) -> tuple[int, int]:
        sy, sx = self.step
        h, w = self.frame_hw
        return (int(round(sy * (self.rows - 1) + h)), int(round(sx * (self.cols - 1) + w)))

    @property
    def margin(self) -> int:
        return int(np.ceil(0.08 * max(self.frame_hw) + 4 * self.jitter_px)) + 8

    @property
    def source_hw(self) -> tuple[int, int]:
        h, w = self.mosaic_hw
        return (h + 2 * self.margin, w + 2 * self.margin)

    @property
    def lens(self) -> Lens:
        return Lens.centred(self.frame_hw, self.distortion)

    @classmethod
    def degraded(cls, **kw) -> CaptureConfig:
        """Distortion, vignetting, exposure and white-balance drift, dark offset, noise and JPEG."""
        base: dict[str, Any] = dict(
            distortion=(-0.06, 0.02, 0.0004, -0.0003, 0.0),
            vignetting=0.3,
            exposure_drift=0.08,
            wb_drift=0.03,
            dark_level=6.0,
            noise_sigma=1.5,
            jpeg_quality=93,
        )
        base.update(kw)
        return cls(**base)


@dataclass
class Captures:
    """Frames in row-major grid order with their truth."""

    frames: list[np.ndarray]
    transforms: list[np.ndarray | None]
    nominal_xy: np.ndarray
    gains: np.ndarray
    lens: Lens
    config: CaptureConfig
    names: list[str] = field(default_factory=list)

    def extent_hw(self) -> tuple[float, float]:
        """Height and width of the box that the placed frames' ideal grids cover in the source."""
        h, w = self.config.frame_hw
        rect = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
        pts = np.concatenate([rect @ m[:, :2].T + m[:, 2] for m in self.transforms if m is not None])
        span = pts.max(0) - pts.min(0) + 1
        return float(span[1]), float(span[0])

    def truth_dict(self) -> dict:
        return {
            "transforms": {n: (None if m is None else m.tolist()) for n, m in zip(self.names, self.transforms)},
            "gains": {n: g.tolist() for n, g in zip(self.names, self.gains)},
            "lens": asdict(self.lens),
            "mosaic_hw": list(self.config.mosaic_hw),
            "extent_hw": list(self.extent_hw()),
            "margin": self.config.margin,
            "frame_hw": list(self.config.frame_hw),
            "config": {k: v for k, v in asdict(self.config).items()},
        }


def textured_section(shape: tuple[int, int], seed: int = 0, grain_px: float = 40.0) -> np.ndarray:
    """An ore-microscopy-like RGB section: grains of several phases, fine texture, pits.

    Band-limited (no detail finer than ~1.5 px) so that resampling it is faithful.
    """
    h, w = shape
    rng = np.random.default_rng(seed)
    coarse = max(1.0, grain_px / 6)
    ch, cw = int(np.ceil(h / coarse)) + 4, int(np.ceil(w / coarse)) + 4
    fields: list[np.ndarray] = []
    for _ in range(2):
        f: np.ndarray = rng.standard_normal((ch, cw)).astype(np.float32)
        f = cv2.GaussianBlur(f, (0, 0), 2.0)
        fields.append(cv2.resize(f, (int(cw * coarse), int(ch * coarse)), interpolation=cv2.INTER_CUBIC)[:h, :w])
    a, b = fields
    a /= a.std() + 1e-6
    b /= b.std() + 1e-6
    palette = np.array(
        [[58, 60, 66], [205, 200, 170], [190, 160, 80], [150, 150, 155], [225, 215, 140], [120, 110, 100]],
        dtype=np.float32,
    )
    phase = np.digitize(a, [-0.6, 0.0]) * 2 + (b > 0.3)
    img: np.ndarray = palette[np.clip(phase, 0, len(palette) - 1)]
    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    fine: np.ndarray = rng.standard_normal((h, w)).astype(np.float32)
    fine = cv2.GaussianBlur(fine, (0, 0), 1.5)
    fine *= 12.0 / (fine.std() + 1e-6)
    img = img + fine[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def observed_to_ideal_map(lens: Lens, frame_hw: tuple[int, int]) -> np.ndarray:
    """``(h, w, 2)`` float32: for each observed (distorted) pixel, its ideal pinhole coordinate."""
    h, w = frame_hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if not np.any(lens.dist_coeffs):
        return np.stack([xs, ys], axis=-1)
    pts = np.stack([xs.ravel(), ys.ravel()], axis=-1).reshape(-1, 1, 2)
    K = lens.camera_matrix
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-10)
    ideal = cv2.undistortPoints(pts, K, lens.dist_coeffs, None, None, K, crit)
    return ideal.reshape(h, w, 2).astype(np.float32)


def vignette(frame_hw: tuple[int, int], strength: float) -> np.ndarray:
    """Radial falloff ``1 - strength * (r / r_corner)^2``, 1 at the optical centre."""
    h, w = frame_hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xs - (w - 1) / 2) ** 2 + (ys - (h - 1) / 2) ** 2) / (((w - 1) / 2) ** 2 + ((h - 1) / 2) ** 2)
    return (1.0 - strength * r2).astype(np.float32)


def _camera(linear: np.ndarray, cfg: CaptureConfig, vig: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = linear * vig[..., None] + cfg.dark_level
    if cfg.noise_sigma:
        img = img + rng.normal(0.0, cfg.noise_sigma, img.shape).astype(np.float32)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if cfg.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(cfg.jpeg_quality)])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if decoded is None:
            raise ValueError(f"JPEG round trip at quality {cfg.jpeg_quality} failed")
        out = decoded[..., ::-1].copy()
    return out


def _truth_transforms(cfg: CaptureConfig, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    sy, sx = cfg.step
    mats, nominal = [], []
    for r in range(cfg.rows):
        for c in range(cfg.cols):
            nx, ny = c * sx, r * sy
            nominal.append((nx, ny))
            th = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
            s = 1.0 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter)
            tx = cfg.margin + nx + rng.uniform(-cfg.jitter_px, cfg.jitter_px)
            ty = cfg.margin + ny + rng.uniform(-cfg.jitter_px, cfg.jitter_px)
            # rotate and scale about the frame centre, so jitter stays a translation
            h, w = cfg.frame_hw
            cxy = np.array([(w - 1) / 2, (h - 1) / 2])
            A = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
            t = np.array([tx, ty]) + cxy - A @ cxy
            mats.append(np.hstack([A, t[:, None]]))
    return mats, np.asarray(nominal, dtype=np.float64)


def _drift(n: int, amount: float, rng: np.random.Generator) -> np.ndarray:
    g = 1.0 + rng.uniform(-amount, amount, n)
    return g / g.mean()


def capture_grid(source: np.ndarray | None, cfg: CaptureConfig, frame_offset: np.ndarray | None = None) -> Captures:
    """Photograph ``source`` (or a fresh :func:`textured_section`) as ``cfg`` says.

    ``source`` must be at least ``cfg.source_hw``; frames in ``cfg.blank_frames``
    show featureless epoxy and frames in ``cfg.isolated_frames`` show another part of
    the section that overlaps nothing (their truth transform is ``None``).
    ``frame_offset`` (2×3, ideal frame px → the grid's ideal frame px): every frame is taken that
    much off its grid position (a second capture pass at the same stage positions); the truth
    transforms stay the grid's.
    """
    rng = np.random.default_rng(cfg.seed)
    if source is None:
        source = textured_section(cfg.source_hw, seed=cfg.seed + 1)
    if (
        source.ndim != 3
        or source.shape[2] != 3
        or source.shape[0] < cfg.source_hw[0]
        or source.shape[1] < cfg.source_hw[1]
    ):
        raise ValueError(f"source of shape {source.shape} is smaller than {cfg.source_hw} × 3")
    n = cfg.rows * cfg.cols
    mats, nominal = _truth_transforms(cfg, rng)
    exposure = _drift(n, cfg.exposure_drift, rng)
    wb = np.stack([_drift(n, cfg.wb_drift, rng) for _ in range(3)], axis=1)
    gains = exposure[:, None] * wb
    gains /= gains.mean(axis=0)
    ideal = observed_to_ideal_map(cfg.lens, cfg.frame_hw)
    vig = vignette(cfg.frame_hw, cfg.vignetting)
    src = source.astype(np.float32)
    other = None
    frames: list[np.ndarray] = []
    truth: list[np.ndarray | None] = []
    for i, M in enumerate(mats):
        if i in cfg.blank_frames:
            scene: np.ndarray = np.broadcast_to(np.asarray(EPOXY_RGB, np.float32), (*cfg.frame_hw, 3))
            truth.append(None)
        else:
            use, Mi = src, M
            if i in cfg.isolated_frames:
                if other is None:
                    other = textured_section(cfg.source_hw, seed=cfg.seed + 1000).astype(np.float32)
                use = other
                truth.append(None)
            else:
                truth.append(M)
            if frame_offset is not None:
                Mi = Mi @ np.vstack([frame_offset, [0.0, 0.0, 1.0]])
            mx = Mi[0, 0] * ideal[..., 0] + Mi[0, 1] * ideal[..., 1] + Mi[0, 2]
            my = Mi[1, 0] * ideal[..., 0] + Mi[1, 1] * ideal[..., 1] + Mi[1, 2]
            scene = cv2.remap(
                use, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
            )
        frames.append(_camera(scene * gains[i], cfg, vig, rng))
    names = [f"r{r:02d}_c{c:02d}" for r in range(cfg.rows) for c in range(cfg.cols)]
    return Captures(frames, truth, nominal, gains, cfg.lens, cfg, names)


def truth_panorama(source: np.ndarray, cfg: CaptureConfig) -> np.ndarray:
    """The mosaic area of ``source`` (what a perfect stitch in source axes shows)."""
    m = cfg.margin
    h, w = cfg.mosaic_hw
    return source[m : m + h, m : m + w]


def _checkerboard_view(
    lens: Lens,
    frame_hw: tuple[int, int],
    ideal: np.ndarray,
    pattern: tuple[int, int],
    rvec: np.ndarray,
    tvec: np.ndarray,
) -> np.ndarray:
    K = lens.camera_matrix
    R, _ = cv2.Rodrigues(rvec)
    H = K @ np.column_stack([R[:, 0], R[:, 1], tvec])
    Hi = np.linalg.inv(H)
    x, y = ideal[..., 0].astype(np.float64), ideal[..., 1].astype(np.float64)
    wz = Hi[2, 0] * x + Hi[2, 1] * y + Hi[2, 2]
    bx = (Hi[0, 0] * x + Hi[0, 1] * y + Hi[0, 2]) / wz
    by = (Hi[1, 0] * x + Hi[1, 1] * y + Hi[1, 2]) / wz
    fpx = np.hypot(np.gradient(bx, axis=1), np.gradient(bx, axis=0)) + 1e-9
    fpy = np.hypot(np.gradient(by, axis=1), np.gradient(by, axis=0)) + 1e-9
    ax = np.clip(np.sin(np.pi * bx) / (np.pi * fpx), -1, 1)
    ay = np.clip(np.sin(np.pi * by) / (np.pi * fpy), -1, 1)
    inside = (bx > 0) & (bx < pattern[0] + 1) & (by > 0) & (by < pattern[1] + 1)
    v = np.where(inside, 0.5 + 0.5 * ax * ay, 1.0)
    return (40 + 180 * v).astype(np.float32)


def calibration_frames(
    cfg: CaptureConfig, n_views: int = 10, n_flat: int = 8, n_dark: int = 8, pattern: tuple[int, int] = (9, 6)
) -> dict[str, list[np.ndarray]]:
    """Flat (white reference), dark and checkerboard frames through the capture camera.

    The checkerboard has ``pattern`` inner corners and unit squares; views tilt it
    by up to ~25° and fill most of the frame.
    """
    rng = np.random.default_rng(cfg.seed + 7)
    lens, hw = cfg.lens, cfg.frame_hw
    vig = vignette(hw, cfg.vignetting)
    nocam = CaptureConfig(**{**asdict(cfg), "vignetting": 0.0})
    white = np.full((*hw, 3), 200.0, np.float32)
    flats = [_camera(white, cfg, vig, rng) for _ in range(n_flat)]
    dark_cfg = CaptureConfig(**{**asdict(cfg), "jpeg_quality": None})
    darks = [_camera(np.zeros((*hw, 3), np.float32), dark_cfg, vig, rng) for _ in range(n_dark)]
    ideal = observed_to_ideal_map(lens, hw)
    views = []
    cols, rows = pattern[0] + 1, pattern[1] + 1
    for _ in range(n_views):
        rvec = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(-0.2, 0.2)])
        R, _ = cv2.Rodrigues(rvec)
        centre = np.array([cols / 2, rows / 2, 0.0])
        fill = rng.uniform(0.8, 0.95)
        z = lens.fx * cols / (fill * hw[1]) if cols / hw[1] > rows / hw[0] else lens.fy * rows / (fill * hw[0])
        off = rng.uniform(-0.1, 0.1, 2) * np.array([cols, rows]) * (1 - fill)
        tvec = np.array([off[0], off[1], z]) - R @ centre
        grey = _checkerboard_view(lens, hw, ideal, pattern, rvec, tvec)
        grey = cv2.GaussianBlur(grey, (0, 0), 0.6)
        views.append(_camera(np.repeat(grey[..., None], 3, axis=2), nocam, np.ones(hw, np.float32), rng))
    return {"flat": flats, "dark": darks, "checkerboard": views}


def _write_image(path: Path, rgb: np.ndarray, jpeg_quality: int | None) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, 100] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    write_image(path, np.ascontiguousarray(rgb[..., ::-1]), params)


def write_section(
    root: str | Path, section_id: str, caps: Captures, positions: bool = True, pixel_size_um: float | None = None
) -> Path:
    """Write ``<root>/<section_id>/tiles/*.png`` (+ ``positions.csv``) and ``truth.json``.

    ``positions.csv`` holds the nominal grid in pixels (``file,x,y``), or with ``pixel_size_um`` the
    stage positions in micrometres (``file,x_um,y_um``) of a camera with that pixel size: the frames'
    true centres in the mosaic (jitter included, as a stage's encoders read them) times the pixel size
    (``truth.json`` records it). Frames are stored losslessly (JPEG artefacts, if any, are already in
    the pixels).
    """
    sec = Path(root) / section_id
    tiles = sec / "tiles"
    tiles.mkdir(parents=True, exist_ok=True)
    for name, frame in zip(caps.names, caps.frames):
        _write_image(tiles / f"{name}.png", frame, None)
    truth = caps.truth_dict()
    if positions:
        if pixel_size_um is None:
            header, xy, digits = ["file", "x", "y"], caps.nominal_xy, 2
        else:
            header, xy, digits = ["file", "x_um", "y_um"], stage_centres(caps) * pixel_size_um, 4
            truth["pixel_size_um"] = pixel_size_um
        with open(sec / "positions.csv", "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(header)
            for name, (x, y) in zip(caps.names, xy):
                wr.writerow([f"{name}.png", f"{x:.{digits}f}", f"{y:.{digits}f}"])
    (sec / "truth.json").write_text(json.dumps(truth, indent=1))
    return sec


def stage_centres(caps: Captures) -> np.ndarray:
    """Where each frame's centre truly is in the mosaic (source pixels less the margin), ``(n, 2)``; a
    blank or unrelated frame (no truth transform) at its nominal place."""
    h, w = caps.config.frame_hw
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    return np.array(
        [
            nominal + centre if M is None else M[:, :2] @ centre + M[:, 2] - caps.config.margin
            for M, nominal in zip(caps.transforms, caps.nominal_xy)
        ]
    )


def write_calibration(root: str | Path, frames: dict[str, list[np.ndarray]]) -> Path:
    """Write ``<root>/calibration/{flat,dark,checkerboard}/*.png``."""
    cal = Path(root) / "calibration"
    for kind, imgs in frames.items():
        d = cal / kind
        d.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(imgs):
            _write_image(d / f"{kind}_{i:02d}.png", img, None)
    return cal
