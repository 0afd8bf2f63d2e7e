"""Class-balancing patch sampler (Korshunov et al.; petroscope's balancer, with its defects fixed).

For every (image, class) a map gives, at each candidate patch centre, the share of that class
inside the patch, raised to ``alpha``; maps are built on a ``downscale``-times coarser grid
from block sums of the class indicator and a box filter, so a 12000×8000 mask with 15 classes
needs ~100 MB. Each draw takes the least represented class so far (for a ``strength`` share
of draws; the rest are uniform), an image in proportion to its content of that class raised to
``image_exponent``, a centre from the class map, and updates the per-class pixel tallies. With
``candidates`` > 1 it draws that many (image, centre) pairs for the chosen class and keeps the one
whose class areas (read from the maps) leave the smallest ratio of the largest to the smallest
tally (1 = the paper's single draw).

Unlike the public implementation: ``alpha`` is applied on every path (cached maps are stored
before the power and keyed by every parameter that changes them), the class set is honoured,
every stream has its own seed, and tallies of several streams can be merged to report the
balance of their union.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.errors import LodeInputError
from engine.io.atomic import atomic_path


@dataclass(frozen=True)
class SamplerParams:
    classes: tuple[int, ...]
    patch: int = 384
    alpha: float = 4.0
    strength: float = 1.0
    image_exponent: float = 1.0
    downscale: int = 8
    candidates: int = 8

    def __post_init__(self) -> None:
        if (
            self.patch < 2
            or self.downscale < 1
            or self.alpha <= 0
            or not 0 <= self.strength <= 1
            or self.candidates < 1
        ):
            raise ValueError(f"invalid sampler parameters: {self}")


def class_area_maps(mask: np.ndarray, classes: Sequence[int], patch: int, downscale: int) -> np.ndarray:
    """Area (pixels) of each class in a ``patch`` square centred at each coarse cell.

    Returns ``(len(classes), ceil(h/d), ceil(w/d))`` float32; cells whose patch would leave
    the image are 0 (a patch is always cut wholly inside the image).
    """
    h, w = mask.shape
    d = downscale
    hd, wd = -(-h // d), -(-w // d)
    pad = np.full((hd * d, wd * d), 255, np.uint8)
    pad[:h, :w] = mask
    k = max(1, round(patch / d))
    half = patch // 2
    cy = np.arange(hd) * d + d // 2
    cx = np.arange(wd) * d + d // 2
    valid = ((cy >= half) & (cy <= h - half))[:, None] & ((cx >= half) & (cx <= w - half))[None, :]
    out = np.zeros((len(classes), hd, wd), np.float32)
    for i, c in enumerate(classes):
        cells = (pad == c).reshape(hd, d, wd, d).sum(axis=(1, 3), dtype=np.int32).astype(np.float32)
        area = cv2.boxFilter(cells, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
        out[i] = np.where(valid, area, 0.0)
    return out


class MapCache:
    """On-disk cache of raw (pre-``alpha``) area maps keyed by mask content and map geometry."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root else None

    def key(self, mask: np.ndarray, classes: Sequence[int], patch: int, downscale: int) -> str:
        h = hashlib.sha256(mask.tobytes())
        h.update(repr((mask.shape, tuple(classes), patch, downscale)).encode())
        return h.hexdigest()[:24]

    def get(self, mask: np.ndarray, classes: Sequence[int], patch: int, downscale: int) -> np.ndarray:
        if self.root is None:
            return class_area_maps(mask, classes, patch, downscale)
        path = self.root / f"{self.key(mask, classes, patch, downscale)}.npy"
        if path.exists():
            return np.load(path)
        maps = class_area_maps(mask, classes, patch, downscale)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, maps)
        return maps


@dataclass
class Tally:
    """Pixels drawn per class (and patches); tallies of several streams add up."""

    classes: tuple[int, ...]
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    patches: int = 0

    def __post_init__(self) -> None:
        if self.pixels.size == 0:
            self.pixels = np.zeros(len(self.classes), np.int64)

    def __add__(self, other: Tally) -> Tally:
        if other.classes != self.classes:
            raise ValueError("tallies over different class sets")
        return Tally(self.classes, self.pixels + other.pixels, self.patches + other.patches)

    @property
    def shares(self) -> np.ndarray:
        total = self.pixels.sum()
        return self.pixels / total if total else np.zeros(len(self.classes))

    def balancing_quality(self) -> float:
        """``1 − (max − min) / sum`` of per-class pixel counts (1 = perfectly balanced)."""
        p = self.pixels.astype(np.float64)
        return float(1 - (p.max() - p.min()) / p.sum()) if p.sum() else float("nan")

    def max_min_ratio(self) -> float:
        p = self.pixels.astype(np.float64)
        return float(p.max() / p.min()) if p.min() > 0 else float("inf")


class BalancedPatchSampler:
    """Draws class-balanced patch positions from a set of masks (one stream per seed).

    Args:
        masks: class-code masks ``(h, w)`` uint8, one per image.
        params: sampler parameters; ``params.classes`` is the class set honoured.
        seed: the stream's seed; give every Ray read task / Train rank its own.
        cache_dir: where raw maps are cached (``None``: no cache).
        stream: ``(index, count)``: stream ``index`` of ``count`` only cuts patches whose top
            row is ``index`` modulo ``count``, so concurrent streams never emit the same patch.
    """

    def __init__(
        self,
        masks: Sequence[np.ndarray],
        params: SamplerParams,
        seed: int,
        cache_dir: str | Path | None = None,
        names: Sequence[str] | None = None,
        stream: tuple[int, int] = (0, 1),
    ):
        if not 0 <= stream[0] < stream[1]:
            raise ValueError(f"stream index {stream[0]} not in 0..{stream[1] - 1}")
        self.stream_index, self.stream_count = stream
        if not masks:
            raise LodeInputError("sampler", "no masks to sample from")
        self.params = params
        self.masks = list(masks)
        self.names = list(names) if names else [f"mask {i}" for i in range(len(masks))]
        self.rng = np.random.default_rng([seed, *stream])
        self.tally = Tally(tuple(params.classes))
        allowed = set(params.classes)
        cache = MapCache(cache_dir)
        self.maps = []
        for name, m in zip(self.names, self.masks):
            if m.ndim != 2 or m.dtype != np.uint8:
                raise LodeInputError(name, f"mask must be (h, w) uint8, got {m.shape} {m.dtype}")
            if min(m.shape) < params.patch:
                raise LodeInputError(name, f"mask {m.shape} smaller than the {params.patch} px patch")
            unknown = sorted(set(np.unique(m).tolist()) - allowed - {255})
            if unknown:
                raise LodeInputError(name, f"unknown class codes {unknown} (class set {sorted(allowed)})")
            raw = cache.get(m, params.classes, params.patch, params.downscale)
            self.maps.append(np.power(raw / np.float32(params.patch**2), params.alpha, dtype=np.float32))
        self.content = np.array([[float(mp[i].sum()) for i in range(len(params.classes))] for mp in self.maps])
        self.present = self.content.sum(0) > 0
        self._cdf: dict[tuple[int, int], np.ndarray] = {}
        self._codes = np.asarray(params.classes, np.int64)

    def _centre(self, img: int, cls: int) -> tuple[int, int]:
        key = (img, cls)
        if key not in self._cdf:
            c = np.cumsum(self.maps[img][cls].ravel(), dtype=np.float64)
            self._cdf[key] = c / c[-1]
        cell = int(np.searchsorted(self._cdf[key], self.rng.random(), side="right"))
        wd = self.maps[img].shape[2]
        d = self.params.downscale
        cy, cx = divmod(cell, wd)
        return int(cy * d + self.rng.integers(d)), int(cx * d + self.rng.integers(d))

    def draw(self) -> tuple[int, int, int]:
        """One patch: ``(image index, y0, x0)`` of its top-left corner."""
        p = self.params
        if self.rng.random() < p.strength and self.present.any():
            shares = np.where(self.present, self.tally.pixels, np.iinfo(np.int64).max)
            cls = int(np.argmin(shares))
            weights = self.content[:, cls] ** p.image_exponent
            weights = weights / weights.sum()
            best = np.inf
            for _ in range(p.candidates):
                i = int(self.rng.choice(len(self.masks), p=weights))
                y, x = self._centre(i, cls)
                score = self._ratio_after(i, y, x) if p.candidates > 1 else 0.0
                if score < best:
                    best, img, cy, cx = score, i, y, x
        else:
            img = int(self.rng.integers(len(self.masks)))
            h, w = self.masks[img].shape
            cy = int(self.rng.integers(p.patch // 2, h - p.patch + p.patch // 2 + 1))
            cx = int(self.rng.integers(p.patch // 2, w - p.patch + p.patch // 2 + 1))
        h, w = self.masks[img].shape
        y0 = min(max(cy - p.patch // 2, 0), h - p.patch)
        x0 = min(max(cx - p.patch // 2, 0), w - p.patch)
        y0 -= (y0 - self.stream_index) % self.stream_count
        if y0 < 0:
            y0 += self.stream_count
        self._count(img, y0, x0)
        return img, y0, x0

    def _ratio_after(self, img: int, cy: int, cx: int) -> float:
        """Largest over smallest tally of the present classes if the patch centred at (cy, cx) were added
        (its class areas read from the maps)."""
        d = self.params.downscale
        area = self.maps[img][:, cy // d, cx // d].astype(np.float64) ** (1 / self.params.alpha) * self.params.patch**2
        after = (self.tally.pixels + area)[self.present]
        return float(after.max() / max(after.min(), 1.0))

    def _count(self, img: int, y0: int, x0: int) -> None:
        cut = self.masks[img][y0 : y0 + self.params.patch, x0 : x0 + self.params.patch]
        self.tally.pixels += np.bincount(cut.ravel(), minlength=256)[self._codes]
        self.tally.patches += 1

    def patches(self, n: int) -> Iterator[tuple[int, int, int]]:
        for _ in range(n):
            yield self.draw()
