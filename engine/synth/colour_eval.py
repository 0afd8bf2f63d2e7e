"""Held-out evaluation of colour correction on synthetic casts with known truth.

Reference colours come from a set of uncast training sections; each test section is
cast, a strip of it is annotated without some held-out classes, a matrix is fitted, and
the held-out classes' corrected mean colours are compared (ΔE2000) with the same
section's uncast mean colours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine.calibrate.colour import (
    CROSSTALK_PRIOR,
    GAMMA,
    ColourMatrix,
    class_means,
    delta_e_linear,
    fit_image,
    fit_lstsq,
    fit_series,
)
from engine.synth.casts import ColourCast, partial_annotation, random_cast
from engine.synth.section import Section, SectionSpec


def render_set(
    n: int, size: tuple[int, int], association: str = "paper", seed: int = 0, grain_diameter: float = 30.0
) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        Section(SectionSpec(seed=seed + i, association=association, grain_diameter=grain_diameter)).render(0, 0, *size)
        for i in range(n)
    ]


def reference_means(samples: list[tuple[np.ndarray, np.ndarray]]) -> dict[int, np.ndarray]:
    """Pixel-weighted mean linear colour per class over uncast sections (what a model card carries)."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for rgb, lab in samples:
        for c, (mean, n) in class_means(rgb, lab).items():
            sums[c] = sums.get(c, 0) + mean * n
            counts[c] = counts.get(c, 0) + n
    return {c: sums[c] / counts[c] for c in sums}


@dataclass(frozen=True)
class EncodedAffine:
    """Baseline: a least-squares affine map fitted on gamma-encoded (not linear) RGB."""

    matrix: np.ndarray
    gamma: float = GAMMA

    @classmethod
    def fit(cls, src: np.ndarray, ref: np.ndarray, gamma: float = GAMMA) -> EncodedAffine:
        return cls(fit_lstsq(np.asarray(src) ** (1 / gamma), np.asarray(ref) ** (1 / gamma)).matrix, gamma)

    def apply_linear(self, linear: np.ndarray) -> np.ndarray:
        enc = np.maximum(np.asarray(linear, np.float64), 0) ** (1 / self.gamma)
        return np.maximum(enc @ self.matrix[:3] + self.matrix[3], 0) ** self.gamma


def held_out_error(
    matrix: ColourMatrix | EncodedAffine,
    cast_rgb: np.ndarray,
    truth_rgb: np.ndarray,
    labels: np.ndarray,
    held_out: list[int],
) -> float:
    """Mean ΔE2000 over ``held_out`` classes between corrected cast means and the uncast means."""
    obs, truth = class_means(cast_rgb, labels), class_means(truth_rgb, labels)
    return float(np.mean([delta_e_linear(matrix.apply_linear(obs[c][0]), truth[c][0]) for c in held_out]))


@dataclass
class Trial:
    cast: ColourCast
    held_out: list[int]
    annotated_fraction: float
    before: float
    delta_e_fit: float
    delta_e_fit_plain: float
    lstsq_fit: float
    lstsq_encoded_fit: float


def per_image_trials(
    tests: list[tuple[np.ndarray, np.ndarray]],
    reference: dict[int, np.ndarray],
    n: int,
    seed: int = 0,
    n_held_out: int = 2,
    fraction: float = 0.35,
) -> list[Trial]:
    """``n`` random casts of the test sections, each fitted per image (ΔE2000 with and without the
    crosstalk prior, and least-squares)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        rgb, lab = tests[t % len(tests)]
        cast = random_cast(rng)
        cap = cast.apply(rgb)
        codes = [c for c in np.unique(lab).tolist() if c in reference and c != 0]
        held = sorted(int(c) for c in rng.choice(codes, n_held_out, replace=False))
        ann = partial_annotation(lab, fraction, held)
        ccm = fit_image(cap, ann, reference)
        m = class_means(cap, ann)
        codes_a = sorted(m)
        src, ref = np.array([m[c][0] for c in codes_a]), np.array([reference[c] for c in codes_a])
        out.append(
            Trial(
                cast,
                held,
                float((ann != 255).mean()),
                held_out_error(ColourMatrix.identity(), cap, rgb, lab, held),
                held_out_error(ccm, cap, rgb, lab, held),
                held_out_error(fit_image(cap, ann, reference, crosstalk_prior=0.0), cap, rgb, lab, held),
                held_out_error(fit_lstsq(src, ref), cap, rgb, lab, held),
                held_out_error(EncodedAffine.fit(src, ref), cap, rgb, lab, held),
            )
        )
    return out


def series_trial(
    tests: list[tuple[np.ndarray, np.ndarray]],
    reference: dict[int, np.ndarray],
    seed: int = 0,
    n_held_out: int = 2,
    fraction: float = 0.35,
    cast: ColourCast | None = None,
    shared_held_out: bool = False,
    priors: Mapping[str, float] | None = None,
    with_series: bool = True,
) -> dict:
    """One cast over all test sections: held-out ΔE of the series matrix against per-image matrices.

    Each capture holds out its own ``n_held_out`` classes, which the series matrix therefore sees in
    the other captures' annotations; ``shared_held_out`` holds the same classes out of every capture,
    so that neither mode has seen them. ``priors`` maps key suffixes to crosstalk priors (default:
    ``""`` the default prior, ``"_plain"`` none); ``cast=None`` draws a random cast from ``seed``.
    """
    rng = np.random.default_rng(seed)
    cast = random_cast(rng) if cast is None else cast
    present = [set(np.unique(lab).tolist()) & set(reference) - {0} for _, lab in tests]
    shared = (
        sorted(int(c) for c in rng.choice(sorted(set.intersection(*present)), n_held_out, replace=False))
        if shared_held_out
        else None
    )
    caps, anns, helds = [], [], []
    for (rgb, lab), codes in zip(tests, present):
        helds.append(shared or sorted(int(c) for c in rng.choice(sorted(codes), n_held_out, replace=False)))
        caps.append(cast.apply(rgb))
        anns.append(partial_annotation(lab, fraction, helds[-1]))

    def errors(matrices: list) -> list[float]:
        return [held_out_error(m, c, rgb, lab, h) for m, c, (rgb, lab), h in zip(matrices, caps, tests, helds)]

    n = len(tests)
    out: dict = {"captures": n, "held_out": helds, "before": float(np.mean(errors([ColourMatrix.identity()] * n)))}
    for name, prior in (priors or {"": CROSSTALK_PRIOR, "_plain": 0.0}).items():
        per_image = errors([fit_image(c, a, reference, crosstalk_prior=prior) for c, a in zip(caps, anns)])
        out.update({f"per_image{name}": float(np.mean(per_image)), f"per_image{name}_by_capture": per_image})
        if with_series:
            in_series = errors([fit_series(list(zip(caps, anns)), reference, crosstalk_prior=prior)] * n)
            out.update({f"series{name}": float(np.mean(in_series)), f"series{name}_by_capture": in_series})
    return out
