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


def _check_codes(mask: np.ndarray, path: Path, classes: ClassSet | None) -> None:
    if classes is None:
        return
    allowed = set(classes.codes)
    unknown = sorted(set(np.unique(mask).tolist()) - allowed)
    if unknown:
        raise LodeInputError(
            path,
            f"unknown class code{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(str, unknown))} (class set: {sorted(allowed)})",
        )


def mask_codes(root: str | Path, split: str, classes: ClassSet | None = None) -> list[int]:
    """Class codes in a split's masks (images are not read); codes outside ``classes`` raise."""
    codes: set[int] = set()
    for _, mp in pairs(root, split):
        mask = read_mask(mp)
        _check_codes(mask, mp, classes)
        codes.update(np.unique(mask).tolist())
    return sorted(codes)


def load_split(root: str | Path, split: str, classes: ClassSet | None = None) -> list[Sample]:
    """Load a split; mask codes outside ``classes`` raise (naming the mask)."""
    out: list[Sample] = []
    for ip, mp in pairs(root, split):
        img, mask, channels = load_pair(ip, mp)
        _check_codes(mask, mp, classes)
        if out and channels != out[0].channels:
            raise LodeInputError(ip, f"channels {channels} differ from {out[0].name}'s {out[0].channels}")
        out.append(Sample(ip.stem, img, mask, channels))
    return out


def load_pair(image: str | Path, mask: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An image of a LumenStone-layout split (``ROOT/imgs/SPLIT/NAME``) with its crossed-polar
    captures ``ROOT/xpl/SPLIT/STEM/*`` registered and stacked when present, its mask, and the
    channel names."""
    image = Path(image)
    img = read_rgb(image)
    m = read_mask(mask, img.shape[:2])
    channels = ["R", "G", "B"]
    xpl = image.parents[2] / "xpl" / image.parent.name / image.stem
    if xpl.is_dir():
        from engine.register.xpl import load_registered

        img, names = load_registered(img, xpl)
        channels += names
    return img, m, channels


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
