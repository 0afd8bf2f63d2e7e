"""Colour calibration: CIEDE2000 and a 4×3 affine colour-correction matrix in linear RGB.

Following Korshunov et al. (2025): the mean colours of annotated classes in a capture are
linearised (gamma 2.2), mapped by an affine matrix ``[r, g, b, 1] @ M`` (``M`` is 4×3),
and compared in CIELAB (sRGB primaries, D65) with reference colours by CIEDE2000. The
matrix minimises the sum of squared ΔE2000 over the classes, starting from a white
balance. ``fit_series`` fits one matrix over several captures of the same equipment
(the paper's "calibration" mode).

The class means of one partial annotation differ from the training-set reference colours
by about 1 ΔE00 even without any cast (grain-to-grain tint, shading, which grains the
annotation happens to cover). An unconstrained 12-parameter fit to ~10 class pairs absorbs
that noise and passes it on to the classes it did not see; ``CROSSTALK_PRIOR`` keeps the
off-diagonal (channel crosstalk) terms near the white-balance start's zero unless the data
ask for them. The same prior weighs ten times less against the data of a ten-capture series.

CIEDE2000 follows Sharma, Wu & Dalal (2005). :func:`ciede2000_terms` splits ΔE00² into
three squared residuals (the rotation term folded in by a 2×2 Cholesky factor), so the
fit is a least-squares problem with three residuals per class.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import least_squares

from engine.errors import LodeInputError
from engine.io.atomic import atomic_write_text

if TYPE_CHECKING:
    import torch

Reference = Mapping[int, "np.ndarray | Sequence[float]"]
"""Reference colour per class code: linear RGB."""

GAMMA = 2.2
UNLABELLED = 255

# Linear sRGB (D65) → CIE XYZ, IEC 61966-2-1.
XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])

# Ridge weight (ΔE00² per unit² of crosstalk) on the matrix's six off-diagonal terms, chosen on
# validation sections and casts that the benchmark's evaluation does not use
# (``python -m benchmarks.colour --choose-prior``): held-out ΔE00 of per-image fits 1.17 / 0.89 /
# 0.862 / 0.864 / 0.89 / 0.95 / 1.13 at 0 / 100 / 200 / 300 / 500 / 1000 / 3000 (flat at 200-300).
CROSSTALK_PRIOR = 300.0
_CPU_CHUNK = 1 << 16  # pixels per step of apply_torch on the CPU
IDENTITY = np.vstack([np.eye(3), np.zeros((1, 3))])
_OFF_DIAGONAL = IDENTITY.ravel() == 0


def linearize(rgb: np.ndarray, gamma: float = GAMMA) -> np.ndarray:
    """uint8 (or 0..255 float) RGB → linear RGB on 0..1, float64."""
    return (np.asarray(rgb, np.float64) / 255.0) ** gamma


def encode(linear: np.ndarray, gamma: float = GAMMA) -> np.ndarray:
    """Linear RGB on 0..1 → uint8 RGB (clipped)."""
    return np.clip(np.rint(np.clip(linear, 0.0, 1.0) ** (1.0 / gamma) * 255.0), 0, 255).astype(np.uint8)


def linear_to_lab(linear: np.ndarray) -> np.ndarray:
    """Linear RGB ``(..., 3)`` → CIELAB ``(..., 3)`` (D65 white)."""
    xyz = np.asarray(linear, np.float64) @ XYZ_FROM_RGB.T / WHITE_D65
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(np.maximum(xyz, eps)), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def ciede2000_terms(
    lab1: np.ndarray, lab2: np.ndarray, kL: float = 1.0, kC: float = 1.0, kH: float = 1.0
) -> np.ndarray:
    """Residuals ``(..., 3)`` whose squared sum is ΔE00² between ``lab1`` and ``lab2`` ``(..., 3)``.

    With ``l = ΔL'/(kL SL)``, ``c = ΔC'/(kC SC)``, ``h = ΔH'/(kH SH)``:
    ``ΔE00² = l² + c² + h² + RT c h = l² + (c + RT h / 2)² + (1 - RT²/4) h²`` (``|RT| < √3``).
    """
    lab1, lab2 = np.broadcast_arrays(np.asarray(lab1, np.float64), np.asarray(lab2, np.float64))
    L1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    L2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    c7 = c_bar**7
    g = 0.5 * (1 - np.sqrt(c7 / (c7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    chroma0 = (c1p * c2p) == 0
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma0, 0.0, dh)
    dL = L2 - L1
    dC = c2p - c1p
    dH = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2)
    L_bar = (L1 + L2) / 2
    cp_bar = (c1p + c2p) / 2
    hsum = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) <= 180, hsum / 2, np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2))
    h_bar = np.where(chroma0, hsum, h_bar)
    t = (
        1
        - 0.17 * np.cos(np.radians(h_bar - 30))
        + 0.24 * np.cos(np.radians(2 * h_bar))
        + 0.32 * np.cos(np.radians(3 * h_bar + 6))
        - 0.20 * np.cos(np.radians(4 * h_bar - 63))
    )
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    cp7 = cp_bar**7
    rc = 2 * np.sqrt(cp7 / (cp7 + 25.0**7))
    sl = 1 + 0.015 * (L_bar - 50) ** 2 / np.sqrt(20 + (L_bar - 50) ** 2)
    sc = 1 + 0.045 * cp_bar
    sh = 1 + 0.015 * cp_bar * t
    rt = -np.sin(np.radians(2 * d_theta)) * rc
    lt, c, h = dL / (kL * sl), dC / (kC * sc), dH / (kH * sh)
    return np.stack([lt, c + rt * h / 2, np.sqrt(1 - rt * rt / 4) * h], axis=-1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray, kL: float = 1.0, kC: float = 1.0, kH: float = 1.0) -> np.ndarray:
    """CIEDE2000 colour difference ``(...)`` between CIELAB arrays ``(..., 3)``."""
    return np.sqrt(np.sum(ciede2000_terms(lab1, lab2, kL, kC, kH) ** 2, axis=-1))


def delta_e_linear(lin1: np.ndarray, lin2: np.ndarray) -> np.ndarray:
    """CIEDE2000 between linear-RGB colours ``(..., 3)``."""
    return ciede2000(linear_to_lab(lin1), linear_to_lab(lin2))


@dataclass(frozen=True)
class ColourMatrix:
    """``corrected_linear = [r, g, b, 1] @ matrix`` on linear RGB (``gamma`` encodes/decodes uint8)."""

    matrix: np.ndarray
    gamma: float = GAMMA
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, np.float64)
        if m.shape != (4, 3) or not np.all(np.isfinite(m)):
            raise ValueError(f"colour matrix must be a finite 4×3 array, got shape {m.shape}")
        object.__setattr__(self, "matrix", m)

    @classmethod
    def identity(cls, gamma: float = GAMMA) -> ColourMatrix:
        return cls(IDENTITY.copy(), gamma)

    def apply_linear(self, linear: np.ndarray) -> np.ndarray:
        return np.asarray(linear, np.float64) @ self.matrix[:3] + self.matrix[3]

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """Correct a uint8 RGB image ``(h, w, 3)`` (or ``(n, 3)``) on the CPU by :meth:`apply_torch`;
        returns uint8 of the same shape."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
            raise ValueError(f"expected uint8 (..., 3) RGB, got {rgb.dtype} {rgb.shape}")
        import torch

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return self.apply_torch(torch.from_numpy(np.ascontiguousarray(rgb))).numpy()

    def apply_torch(self, rgb: torch.Tensor) -> torch.Tensor:
        """Correct uint8 RGB ``(..., 3)`` (channels last) on its own device; returns a new uint8 tensor.

        float32 throughout: gamma LUT, ``((r m0 + g m1) + b m2) + m3``, clamp at 0, ``pow(1/gamma)``,
        ×255, round half to even, saturate at 255. Pixels go in chunks on the CPU (cache-sized temporaries).
        """
        import torch

        if rgb.dtype != torch.uint8 or rgb.shape[-1] != 3:
            raise ValueError(f"expected uint8 (..., 3) RGB, got {rgb.dtype} {tuple(rgb.shape)}")
        lut = torch.from_numpy(((np.arange(256) / 255.0) ** self.gamma).astype(np.float32)).to(rgb.device)
        m = torch.from_numpy(self.matrix.astype(np.float32)).to(rgb.device)
        terms = lut[:, None] * m[:3, None, :]  # (3, 256, 3): input channel, level, output channel
        inverse = float(np.float32(1.0 / self.gamma))
        flat = rgb.reshape(-1, 3)
        out = torch.empty_like(flat)
        step = _CPU_CHUNK if rgb.device.type == "cpu" else max(len(flat), 1)
        for i in range(0, len(flat), step):
            idx = flat[i : i + step].int()
            y = terms[0].index_select(0, idx[:, 0])
            y.add_(terms[1].index_select(0, idx[:, 1])).add_(terms[2].index_select(0, idx[:, 2])).add_(m[3])
            out[i : i + step] = y.clamp_(min=0).pow_(inverse).mul_(255).round_().clamp_(max=255)
        return out.reshape(rgb.shape)

    def to_dict(self) -> dict:
        return {
            "matrix": self.matrix.tolist(),
            "gamma": self.gamma,
            "layout": "[r, g, b, 1] @ matrix, linear RGB",
            **({"info": self.info} if self.info else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "colour matrix") -> ColourMatrix:
        try:
            return cls(np.asarray(d["matrix"], np.float64), float(d.get("gamma", GAMMA)), dict(d.get("info", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise LodeInputError(source, f"not a colour matrix: {exc}") from exc


def class_means(
    image: np.ndarray, annotation: np.ndarray, gamma: float = GAMMA, min_pixels: int = 20, source: str = "annotation"
) -> dict[int, tuple[np.ndarray, int]]:
    """Mean linear colour and pixel count of every annotated class (``UNLABELLED`` = not annotated)."""
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        raise LodeInputError(source, f"expected a uint8 (h, w, 3) image, got {image.dtype} {image.shape}")
    if annotation.shape != image.shape[:2]:
        raise LodeInputError(source, f"annotation {annotation.shape} does not match the image {image.shape[:2]}")
    ann = annotation.ravel()
    lut = (np.arange(256) / 255.0) ** gamma
    lin = lut[image[..., :3].reshape(-1, 3)]
    counts = np.bincount(ann, minlength=256)
    sums = np.stack([np.bincount(ann, weights=lin[:, ch], minlength=256) for ch in range(3)], axis=1)
    return {
        int(c): (sums[c] / counts[c], int(counts[c])) for c in np.flatnonzero(counts >= min_pixels) if c != UNLABELLED
    }


def _paired(
    means: Mapping[int, tuple[np.ndarray, int]], reference: Reference, source: str
) -> tuple[list[int], np.ndarray, np.ndarray]:
    codes = sorted(c for c in means if c in reference)
    missing = sorted(set(means) - set(reference))
    if missing:
        raise LodeInputError(
            source, f"annotated class codes {missing} have no reference colour (reference holds {sorted(reference)})"
        )
    src = np.array([means[c][0] for c in codes]).reshape(-1, 3)
    ref = np.array([reference[c] for c in codes], np.float64).reshape(-1, 3)
    return codes, src, ref


def white_balance(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Diagonal 4×3 matrix with per-channel gains ``Σ ref / Σ src`` (zero offset)."""
    gains = ref.sum(0) / np.maximum(src.sum(0), 1e-9)
    return np.vstack([np.diag(gains), np.zeros((1, 3))])


def fit_delta_e(
    src: np.ndarray,
    ref: np.ndarray,
    gamma: float = GAMMA,
    init: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    crosstalk_prior: float = CROSSTALK_PRIOR,
) -> ColourMatrix:
    """Affine 4×3 matrix minimising ``Σ w ΔE00(src @ M, ref)² + crosstalk_prior · Σ offdiag(M)²``.

    ``src`` and ``ref`` are colour pairs ``(n, 3)`` in linear RGB; ``crosstalk_prior=0`` is the
    paper's plain objective. ``info`` records the mean ΔE00 of the pairs before any correction
    (``mean_delta_e_before``: ``src`` as it is), at the white-balance start and after the fit.
    """
    src, ref = np.asarray(src, np.float64), np.asarray(ref, np.float64)
    if src.shape != ref.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 2:
        raise ValueError(f"need two or more colour pairs of shape (n, 3), got {src.shape} and {ref.shape}")
    if not crosstalk_prior >= 0:
        raise ValueError(f"crosstalk_prior must be ≥ 0, got {crosstalk_prior}")
    ref_lab = linear_to_lab(ref)
    sw = np.ones(len(src)) if weights is None else np.sqrt(np.asarray(weights, np.float64))
    x_aug = np.hstack([src, np.ones((len(src), 1))])
    m0 = white_balance(src, ref) if init is None else np.asarray(init, np.float64)
    ridge = np.sqrt(crosstalk_prior)

    def colour_residuals(p: np.ndarray) -> np.ndarray:
        lin = np.maximum(x_aug @ p.reshape(4, 3), 0.0)
        return ciede2000_terms(linear_to_lab(lin), ref_lab) * sw[:, None]

    def residuals(p: np.ndarray) -> np.ndarray:
        return np.concatenate([colour_residuals(p).ravel(), ridge * p[_OFF_DIAGONAL]])

    def mean_delta_e(p: np.ndarray) -> float:
        return float((np.sqrt((colour_residuals(p) ** 2).sum(1)) / sw).mean())

    res = least_squares(residuals, m0.ravel(), method="trf", x_scale="jac", max_nfev=2000)
    return ColourMatrix(
        res.x.reshape(4, 3),
        gamma,
        {
            "method": "ciede2000",
            "pairs": len(src),
            "crosstalk_prior": float(crosstalk_prior),
            "mean_delta_e_before": mean_delta_e(IDENTITY.ravel()),
            "mean_delta_e_fit": mean_delta_e(res.x),
            "mean_delta_e_white_balance": mean_delta_e(m0.ravel()),
            "evaluations": int(res.nfev),
        },
    )


def fit_lstsq(src: np.ndarray, ref: np.ndarray, gamma: float = GAMMA) -> ColourMatrix:
    """Baseline: plain least-squares affine fit in linear RGB (minimum-norm when underdetermined)."""
    x_aug = np.hstack([np.asarray(src, np.float64), np.ones((len(src), 1))])
    m, *_ = np.linalg.lstsq(x_aug, np.asarray(ref, np.float64), rcond=None)
    return ColourMatrix(m, gamma, {"method": "lstsq", "pairs": len(src)})


def fit_image(
    image: np.ndarray,
    annotation: np.ndarray,
    reference: Reference,
    gamma: float = GAMMA,
    source: str = "annotation",
    crosstalk_prior: float = CROSSTALK_PRIOR,
) -> ColourMatrix:
    """Per-image mode: fit on one capture and its sparse annotation (class codes, 255 = none)."""
    return fit_series([(image, annotation)], reference, gamma, [source], crosstalk_prior)


def fit_series(
    captures: Sequence[tuple[np.ndarray, np.ndarray]],
    reference: Reference,
    gamma: float = GAMMA,
    sources: Sequence[str] | None = None,
    crosstalk_prior: float = CROSSTALK_PRIOR,
) -> ColourMatrix:
    """Series mode: one matrix over the (capture, class) means of several captures of one equipment."""
    sources = list(sources or [f"capture {i}" for i in range(len(captures))])
    return fit_means(
        [class_means(img, ann, gamma, source=s) for (img, ann), s in zip(captures, sources)],
        reference,
        gamma,
        sources,
        crosstalk_prior,
    )


def fit_means(
    means: Sequence[Mapping[int, tuple[np.ndarray, int]]],
    reference: Reference,
    gamma: float = GAMMA,
    sources: Sequence[str] | None = None,
    crosstalk_prior: float = CROSSTALK_PRIOR,
) -> ColourMatrix:
    """Fit on precomputed :func:`class_means` of one or more captures (each class pair weighs the same)."""
    sources = list(sources or [f"capture {i}" for i in range(len(means))])
    srcs, refs, used = [], [], []
    for m, s in zip(means, sources):
        codes, src, ref = _paired(m, reference, s)
        srcs.append(src)
        refs.append(ref)
        used.append(codes)
    src, ref = np.concatenate(srcs), np.concatenate(refs)
    if len({c for u in used for c in u}) < 2:
        raise LodeInputError(
            ", ".join(sources),
            "the annotation must cover at least two classes with a reference colour (20 px or more each)",
        )
    ccm = fit_delta_e(src, ref, gamma, crosstalk_prior=crosstalk_prior)
    ccm.info.update({"classes": sorted({c for u in used for c in u}), "captures": len(means)})
    return ccm


def reference_from_card(colors: Mapping[str, Sequence[float]]) -> dict[int, np.ndarray]:
    """Model-card reference colours (``{"code": [r, g, b]}`` linear) → ``{code: array}``."""
    return {int(k): np.asarray(v, np.float64) for k, v in colors.items()}


def save_matrices(path: str | Path, matrices: Mapping[str, ColourMatrix], mode: str) -> None:
    atomic_write_text(
        Path(path), json.dumps({"mode": mode, "matrices": {k: m.to_dict() for k, m in matrices.items()}}, indent=1)
    )


def load_matrices(path: str | Path) -> dict[str, ColourMatrix]:
    p = Path(path)
    try:
        blob = json.loads(p.read_text())
        return {k: ColourMatrix.from_dict(v, str(p)) for k, v in blob["matrices"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LodeInputError(p, f"cannot read colour matrices: {exc}") from exc


def annotation_for(annotations: str | Path, stem: str) -> Path:
    """The annotation mask of capture ``stem`` in a folder (``<stem>.png``)."""
    p = Path(annotations) / f"{stem}.png"
    if not p.is_file():
        raise LodeInputError(p, f"annotation for {stem} not found")
    return p


def fit_captures(
    images: Sequence[str | Path],
    annotations: str | Path,
    reference: Reference,
    mode: str = "per-image",
    gamma: float = GAMMA,
) -> dict[str, ColourMatrix]:
    """Matrices for capture files (keyed by file stem): one each (``per-image``) or one shared (``series``).

    In series mode captures without an annotation get the series matrix too.
    """
    from engine.io.images import read_mask, read_rgb

    if mode not in ("per-image", "series"):
        raise ValueError(f"unknown colour mode {mode!r}; use 'per-image' or 'series'")
    means, stems, sources = [], [Path(p).stem for p in images], []
    for path in map(Path, images):
        ann = Path(annotations) / f"{path.stem}.png"
        if not ann.is_file():
            if mode == "per-image":
                raise LodeInputError(ann, f"annotation for {path.name} not found (per-image mode needs one each)")
            continue
        img = read_rgb(path)
        means.append(class_means(img, read_mask(ann, img.shape[:2]), gamma, source=str(ann)))
        sources.append(str(ann))
    if not means:
        raise LodeInputError(annotations, "no annotation matches any capture")
    if mode == "series":
        m = fit_means(means, reference, gamma, sources)
        return {s: m for s in stems}
    return {s: fit_means([m], reference, gamma, [src]) for s, m, src in zip(stems, means, sources)}
