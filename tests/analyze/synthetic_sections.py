"""Synthetic sections with exactly known grains, written as OME-Zarr segmentation stores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.draw import disk, polygon
from skimage.measure import label, regionprops

from engine.classes import LUMENSTONE, ClassSet
from engine.io.integrity import mark_complete
from engine.io.ome import PyramidLayout, create_image, create_labels, open_store, write_block


@dataclass
class Grain:
    code: int
    kind: str
    diameter: float  # true equivalent circle diameter in px (disc: 2r; polygon: from its exact area)
    pixels: int


@dataclass
class Truth:
    labels: np.ndarray
    grains: list[Grain] = field(default_factory=list)


def place_grains(
    shape: tuple[int, int],
    codes: list[int],
    n: int,
    seed: int,
    rmin: float = 6.0,
    rmax: float = 22.0,
    background: int = 0,
) -> Truth:
    """Non-touching discs and convex polygons of the given codes, at least 2 px apart (8-connected apart)."""
    rng = np.random.default_rng(seed)
    H, W = shape
    lab = np.full(shape, background, np.uint8)
    taken = np.zeros(shape, bool)
    truth = Truth(lab)
    tries = 0
    while len(truth.grains) < n and tries < 50 * n:
        tries += 1
        r = rng.uniform(rmin, rmax)
        cy, cx = rng.uniform(r + 2, H - r - 2), rng.uniform(r + 2, W - r - 2)
        code = int(rng.choice(codes))
        if rng.random() < 0.5:
            rr, cc = disk((cy, cx), r, shape=shape)
            kind, diam = "disc", 2 * r
        else:
            k = int(rng.integers(5, 9))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = r * rng.uniform(0.7, 1.0, k)
            py, px = cy + rad * np.sin(ang), cx + rad * np.cos(ang)
            rr, cc = polygon(py, px, shape=shape)
            area = 0.5 * abs(np.dot(px, np.roll(py, 1)) - np.dot(py, np.roll(px, 1)))
            kind, diam = "polygon", math.sqrt(4 * area / math.pi)
        if not len(rr):
            continue
        y0, y1, x0, x1 = rr.min() - 2, rr.max() + 3, cc.min() - 2, cc.max() + 3
        if taken[max(y0, 0) : y1, max(x0, 0) : x1].any():
            continue
        lab[rr, cc] = code
        taken[rr, cc] = True
        truth.grains.append(Grain(code, kind, diam, len(rr)))
    return truth


def colour_image(labels: np.ndarray, classes: ClassSet, seed: int, noise: float = 8.0) -> np.ndarray:
    """(3, y, x) uint8 image: class colours plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    img = classes.palette()[labels].astype(np.float32)
    img += rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8).transpose(2, 0, 1)


def write_store(
    path: Path,
    sections: dict[str, np.ndarray],
    classes: ClassSet = LUMENSTONE,
    pixel_size_um: float | None = 0.5,
    block: int = 128,
    probabilities: dict[str, np.ndarray] | None = None,
) -> Path:
    """A segmentation store: per section an RGB image, labels/minerals and optional probabilities."""
    root = open_store(path, mode="w")
    layout = PyramidLayout((block, block), chunk=64, levels=2)
    for name, lab in sections.items():
        H, W = lab.shape
        img = create_image(root, name, (3, H, W), layout, pixel_size_um=pixel_size_um)
        lbl = create_labels(img, "minerals", classes, layout, pixel_size_um=pixel_size_um)
        rgb = colour_image(lab, classes, seed=1)
        prob = None
        if probabilities and name in probabilities:
            p = probabilities[name]
            prob = create_image(img, "probabilities", p.shape, layout, channel_names=classes.names)
        for y0 in range(0, H, block):
            for x0 in range(0, W, block):
                sl = (slice(y0, y0 + block), slice(x0, x0 + block))
                write_block(img, rgb[(slice(None), *sl)], y0, x0, "image")
                write_block(lbl, lab[sl], y0, x0, "label")
                if prob is not None:
                    write_block(prob, probabilities[name][(slice(None), *sl)], y0, x0, "image")
        mark_complete(lbl)
        mark_complete(img)
    return path


def scribbles_for(truth: np.ndarray, seed: int, grain_share: float = 0.7) -> np.ndarray:
    """A user's strokes: a short line through the middle of most grains, and some strokes on background."""
    rng = np.random.default_rng(seed)
    sc = np.full(truth.shape, 255, np.uint8)
    regions = label(truth, background=-1, connectivity=1)
    for r in regionprops(regions):
        if r.area < 30 or rng.random() > grain_share:
            continue
        dist = ndi.distance_transform_edt(regions == r.label)
        cy, cx = (int(v) for v in r.centroid)
        if dist[cy, cx] < 2:
            continue
        half = max(2, int(dist[cy, cx] * 0.6))
        xs = np.arange(cx - half, cx + half + 1)
        sc[cy, xs[dist[cy, xs] >= 2]] = truth[cy, cx]
    inside_bg = ndi.distance_transform_edt(truth == 0) >= 4
    for _ in range(40):
        y, x = int(rng.integers(0, truth.shape[0])), int(rng.integers(0, truth.shape[1] - 30))
        sc[y, x : x + 30][inside_bg[y, x : x + 30]] = 0
    return sc


def gaussian_colour_model(labels: np.ndarray, seed: int, noise: float = 30.0):
    """Synthetic image with two pairs of look-alike minerals and a Gaussian colour classifier with spatial context."""
    rng = np.random.default_rng(seed)
    colours = {
        0: (40, 40, 40),
        1: (200, 170, 60),
        2: (170, 170, 230),
        5: (210, 150, 90),
        6: (225, 215, 120),
        8: (90, 110, 140),
    }
    codes = np.array(sorted(colours))
    img = np.zeros(labels.shape + (3,), np.float32)
    for c in codes:
        img[labels == c] = colours[c]
    img = cv2.GaussianBlur(img + rng.normal(0, noise, img.shape).astype(np.float32), (0, 0), 2.0)
    var = noise**2 / (4 * np.pi * 4.0)
    ll = np.stack([-((img - np.array(colours[c], np.float32)) ** 2).sum(-1) / (2 * var) for c in codes])
    p = np.exp(ll - ll.max(0))
    p /= p.sum(0)
    return np.clip(img, 0, 255).astype(np.uint8), (p * 255).round().astype(np.uint8), codes[p.argmax(0)]
