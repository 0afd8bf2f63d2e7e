"""LumenStone-layout collections: ``imgs/{split}/*`` with ``masks/{split}/*.png`` of class codes.

Optional crossed-polar captures ``xpl/{split}/<stem>/*`` are registered to their PPL image and
stacked after its RGB channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.classes import ClassSet
from engine.errors import LodeInputError
from engine.io.images import list_images, read_mask, read_rgb


@dataclass
class Sample:
    name: str
    image: np.ndarray  # (h, w, c) uint8: RGB, then registered XPL channels if any
    mask: np.ndarray  # (h, w) uint8 class codes
    channels: list[str] = field(default_factory=lambda: ["R", "G", "B"])


def pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    root = Path(root)
    imgs = list_images(root / "imgs" / split)
    if not imgs:
        raise LodeInputError(root / "imgs" / split, "no images")
    out = []
    for p in imgs:
        m = root / "masks" / split / f"{p.stem}.png"
        if not m.is_file():
            raise LodeInputError(m, f"mask for {p.name} not found")
        out.append((p, m))
    return out


def load_split(root: str | Path, split: str, classes: ClassSet | None = None) -> list[Sample]:
    """Load a split; mask codes outside ``classes`` raise (naming the mask)."""
    out = []
    allowed = None if classes is None else set(classes.codes)
    for ip, mp in pairs(root, split):
        img = read_rgb(ip)
        mask = read_mask(mp, img.shape[:2])
        if allowed is not None:
            unknown = sorted(set(np.unique(mask).tolist()) - allowed)
            if unknown:
                raise LodeInputError(mp, f"unknown class code{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown))} (class set: {sorted(allowed)})")
        channels = ["R", "G", "B"]
        xpl = Path(root) / "xpl" / split / ip.stem
        if xpl.is_dir():
            from engine.register.xpl import load_registered

            img, names = load_registered(img, xpl)
            channels += names
        if out and channels != out[0].channels:
            raise LodeInputError(xpl, f"channels {channels} differ from {out[0].name}'s {out[0].channels}")
        out.append(Sample(ip.stem, img, mask, channels))
    return out


def codes_present(samples: list[Sample]) -> list[int]:
    codes: set[int] = set()
    for s in samples:
        codes.update(np.unique(s.mask).tolist())
    return sorted(codes)


def channel_stats(samples: list[Sample]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..1 scale."""
    c = samples[0].image.shape[2]
    acc = np.zeros(c)
    acc2 = np.zeros(c)
    n = 0
    for s in samples:
        px = s.image.reshape(-1, c).astype(np.float64) / 255.0
        acc += px.sum(0)
        acc2 += (px**2).sum(0)
        n += px.shape[0]
    mean = acc / n
    std = np.sqrt(np.maximum(acc2 / n - mean**2, 1e-8))
    return mean.tolist(), std.tolist()


def random_patches(samples: list[Sample], lut: np.ndarray, patch: int, n: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniformly placed patches with random flips/rot90: images (n,c,p,p) uint8, targets (n,p,p) uint8."""
    xs = np.empty((n, samples[0].image.shape[2], patch, patch), np.uint8)
    ys = np.empty((n, patch, patch), np.uint8)
    for i in range(n):
        s = samples[rng.integers(len(samples))]
        h, w = s.mask.shape
        if h < patch or w < patch:
            raise LodeInputError(s.name, f"image {h}×{w} smaller than the {patch} px patch")
        y0, x0 = rng.integers(0, h - patch + 1), rng.integers(0, w - patch + 1)
        img = s.image[y0:y0 + patch, x0:x0 + patch]
        tgt = lut[s.mask[y0:y0 + patch, x0:x0 + patch]]
        k = int(rng.integers(4))
        img, tgt = np.rot90(img, k), np.rot90(tgt, k)
        if rng.random() < 0.5:
            img, tgt = img[:, ::-1], tgt[:, ::-1]
        xs[i] = np.moveaxis(img, -1, 0)
        ys[i] = tgt
    return xs, ys
