"""Colour scores of :mod:`engine.stitch.evaluate` against panoramas made from the source with known noise."""

from __future__ import annotations

import cv2
import numpy as np

from engine.stitch.evaluate import noise_floor_delta_e, sample_delta_e


def _source(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 220, (60, 80, 3), dtype=np.uint8)
    return cv2.resize(base, (640, 480), interpolation=cv2.INTER_CUBIC)


def test_noise_floor_is_the_delta_e_of_a_panorama_that_is_the_source_plus_that_noise() -> None:
    src = _source()
    G = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    keep = np.zeros(src.shape[:2], bool)
    keep[16:-16, 16:-16] = True
    assert sample_delta_e(src, src, G, keep, n=40_000) < 1e-9
    rng = np.random.default_rng(5)
    floors = []
    for sigma in (0.75, 1.5, 3.0):
        pano = np.clip(np.round(src + rng.normal(0.0, sigma, src.shape)), 0, 255).astype(np.uint8)
        floor = noise_floor_delta_e(src, G, keep, sigma, n=40_000)
        assert abs(sample_delta_e(pano, src, G, keep, n=40_000) - floor) < 0.03 * floor
        floors.append(floor)
    assert floors[0] < floors[1] < floors[2]
    assert noise_floor_delta_e(src, G, keep, 0.0, n=40_000) == 0.0
