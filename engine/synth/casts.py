"""Synthetic colour casts: the same section photographed through other equipment.

A cast decodes the reference capture (gamma 2.2) to linear RGB, passes it through a
coloured filter (per-channel transmission: blue or yellow glass), then an affine map in
linear RGB (channel gains, crosstalk, flare offset: another camera's response), and
encodes it with the other camera's gamma. The parameters are kept as truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from engine.calibrate.colour import GAMMA, encode, linearize

FILTERS: dict[str, tuple[float, float, float]] = {
    "none": (1.0, 1.0, 1.0),
    "blue": (0.72, 0.86, 1.0),
    "yellow": (1.0, 0.93, 0.62),
}


@dataclass(frozen=True)
class ColourCast:
    """``out = encode(([lin * filter, 1] @ matrix), gamma)`` with ``lin`` decoded at 2.2."""

    matrix: tuple[tuple[float, float, float], ...]
    gamma: float = GAMMA
    filter: tuple[float, float, float] = (1.0, 1.0, 1.0)
    filter_name: str = "none"

    @property
    def linear_matrix(self) -> np.ndarray:
        """The whole cast in linear RGB as one 4×3 affine matrix (filter folded in)."""
        m = np.asarray(self.matrix, np.float64)
        return np.vstack([np.diag(self.filter) @ m[:3], m[3:]])

    def apply_linear(self, linear: np.ndarray) -> np.ndarray:
        m = self.linear_matrix
        return np.clip(np.asarray(linear, np.float64) @ m[:3] + m[3], 0.0, 1.0)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """Cast a uint8 RGB image ``(h, w, 3)``."""
        lut = linearize(np.arange(256))
        lin = self.apply_linear(lut[rgb])
        # The other camera encodes its linear response with its own gamma; a decoder at 2.2 then
        # reads ``lin ** (gamma_cam / 2.2)`` — not affine, so no matrix fits it exactly.
        return encode(lin, self.gamma)

    def truth(self) -> dict:
        return asdict(self)


def random_cast(rng: np.random.Generator, strength: float = 1.0, filter_name: str | None = None) -> ColourCast:
    """A random cast: gains 0.7–1.3, crosstalk ±0.08, flare 0–0.015, gamma 2.2·(0.92–1.08), a filter.

    ``strength`` scales every departure from the identity.
    """
    gains = 1.0 + strength * rng.uniform(-0.3, 0.3, 3)
    cross = strength * rng.uniform(-0.08, 0.08, (3, 3))
    np.fill_diagonal(cross, 0.0)
    m = np.diag(gains) + cross
    offset = strength * rng.uniform(0.0, 0.015, 3)
    name = filter_name if filter_name is not None else str(rng.choice(["none", "blue", "yellow"]))
    fr, fg, fb = (float(v) for v in 1.0 - strength * (1.0 - np.asarray(FILTERS[name])))
    gamma = GAMMA * (1.0 + strength * rng.uniform(-0.08, 0.08))
    rows = tuple((float(r[0]), float(r[1]), float(r[2])) for r in np.vstack([m, offset]))
    return ColourCast(rows, float(gamma), (fr, fg, fb), name)


def partial_annotation(
    labels: np.ndarray, fraction: float = 0.35, exclude: tuple[int, ...] | list[int] = (), unlabelled: int = 255
) -> np.ndarray:
    """A sparse annotation: the truth inside a strip of ``fraction`` of the width, minus ``exclude`` classes."""
    ann = np.full(labels.shape, unlabelled, np.uint8)
    w = int(round(fraction * labels.shape[1]))
    keep = ~np.isin(labels[:, :w], list(exclude))
    ann[:, :w][keep] = labels[:, :w][keep]
    return ann
