"""Colour-correction matrix: exact recovery, held-out classes on synthetic casts, series mode, bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engine.calibrate.colour import (
    CROSSTALK_PRIOR,
    ColourMatrix,
    class_means,
    delta_e_linear,
    fit_delta_e,
    fit_image,
    fit_series,
    linearize,
    load_matrices,
    save_matrices,
)
from engine.errors import LodeInputError
from engine.synth.casts import ColourCast, partial_annotation, random_cast
from engine.synth.colour_eval import per_image_trials, reference_means, render_set, series_trial

SIZE = (512, 683)


@pytest.fixture(scope="module")
def sections():
    train = render_set(3, SIZE, seed=0, grain_diameter=24)
    tests = render_set(10, SIZE, seed=100, grain_diameter=24)
    return reference_means(train), tests


def test_recovers_an_exact_affine_map():
    """Without gamma change or clipping the cast is affine in linear RGB: the plain objective inverts it."""
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.02, 0.7, (8, 3))
    cast = ColourCast(((0.9, 0.05, 0.0), (0.03, 1.1, -0.02), (0.0, 0.04, 0.8), (0.01, 0.0, 0.02)))
    src = cast.apply_linear(ref)
    ccm = fit_delta_e(src[:6], ref[:6], crosstalk_prior=0.0)
    assert ccm.info["mean_delta_e_fit"] < 1e-3
    held = delta_e_linear(ccm.apply_linear(src[6:]), ref[6:])
    assert held.max() < 1e-2
    np.testing.assert_allclose(ccm.apply_linear(cast.apply_linear(np.eye(3) * 0.5)), np.eye(3) * 0.5, atol=1e-3)


def test_white_balance_start_is_improved_upon():
    rng = np.random.default_rng(4)
    ref = rng.uniform(0.02, 0.7, (10, 3))
    src = random_cast(rng, strength=1.0).apply_linear(ref)
    ccm = fit_delta_e(src, ref)
    assert ccm.info["mean_delta_e_fit"] < 0.2 * ccm.info["mean_delta_e_white_balance"]


def test_delta_e_before_is_that_of_the_uncorrected_pairs():
    """``mean_delta_e_before`` equals scikit-image's CIEDE2000 of ``src`` as it is against ``ref`` (its own
    sRGB → CIELAB), and a cast leaves the pairs much further apart than the fit."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    rng = np.random.default_rng(6)
    ref = rng.uniform(0.03, 0.6, (10, 3))
    src = random_cast(rng, strength=1.0).apply_linear(ref)
    assert np.all((src > 0) & (src < 1))

    def lab(linear: np.ndarray) -> np.ndarray:
        srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
        return rgb2lab(srgb[None])[0]

    ccm = fit_delta_e(src, ref)
    before = deltaE_ciede2000(lab(src), lab(ref)).mean()
    assert ccm.info["mean_delta_e_before"] == pytest.approx(before, rel=1e-6)
    assert ccm.info["mean_delta_e_before"] > 3 * ccm.info["mean_delta_e_fit"]


def test_apply_matches_float_reference():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    m = ColourMatrix(np.array([[1.1, 0.05, 0], [0.02, 0.9, 0.01], [0, 0.03, 1.2], [0.01, 0.0, 0.02]]))
    expect = np.clip(linearize(img) @ m.matrix[:3] + m.matrix[3], 0, 1) ** (1 / 2.2) * 255
    assert np.abs(m.apply(img).astype(float) - expect).max() <= 0.51
    assert np.array_equal(ColourMatrix.identity().apply(img), img)


def test_per_image_held_out_classes_beat_least_squares(sections):
    reference, tests = sections
    trials = per_image_trials(tests[:6], reference, 12, seed=0)
    before = np.mean([t.before for t in trials])
    de = np.mean([t.delta_e_fit for t in trials])
    ls = np.mean([t.lstsq_fit for t in trials])
    assert max(t.annotated_fraction for t in trials) <= 0.35
    assert before > 5.0
    assert de < 1.5
    assert de < ls


def test_series_mode_within_half_of_per_image(sections):
    """Held-out classes shared by the ten captures, so that neither mode has seen them."""
    reference, tests = sections
    r = series_trial(tests, reference, seed=2, shared_held_out=True, priors={"": CROSSTALK_PRIOR})
    assert r["captures"] == 10 and all(h == r["held_out"][0] for h in r["held_out"])
    assert abs(r["series"] - r["per_image"]) <= 0.5
    assert r["series"] < r["before"] / 5


def test_crosstalk_prior_narrows_the_series_gap(sections):
    """Each capture holding out its own classes (the series sees them in the other captures)."""
    reference, tests = sections
    r = series_trial(tests, reference, seed=2)
    assert len({tuple(h) for h in r["held_out"]}) > 1
    assert r["per_image"] < r["per_image_plain"]
    assert abs(r["series"] - r["per_image"]) < 0.6 * abs(r["series_plain"] - r["per_image_plain"])


def test_crosstalk_prior_absorbs_less_annotation_noise(sections):
    """Uncast captures: the truth is the identity, so every bit of held-out error is annotation noise
    (grain tints, texture, which grains the strip covers) that the fit has passed on."""
    reference, tests = sections
    r = series_trial(tests[:6], reference, seed=0, cast=ColourCast(((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0))))
    assert r["before"] == 0.0
    assert r["per_image"] < 0.8 * r["per_image_plain"]
    assert r["series"] < r["per_image"]


def test_cast_truth_roundtrip_and_partial_annotation(sections):
    _, tests = sections
    rgb, lab = tests[0]
    ann = partial_annotation(lab, 0.3, exclude=[2])
    assert (ann != 255).mean() <= 0.3 + 1e-3
    assert not np.any(ann == 2) and np.any(lab[:, :200] == 2)
    cast = random_cast(np.random.default_rng(0), filter_name="blue")
    plain = replace(cast, filter=(1.0, 1.0, 1.0), filter_name="none")
    blue, clear = class_means(cast.apply(rgb), lab)[0][0], class_means(plain.apply(rgb), lab)[0][0]
    assert blue[0] / blue[2] < 0.9 * clear[0] / clear[2]
    assert ColourCast(**cast.truth()) == cast


def test_bad_annotations_raise_naming_the_input(sections, tmp_path):
    reference, tests = sections
    rgb, lab = tests[0]
    with pytest.raises(LodeInputError, match="ann.png"):
        fit_image(rgb, lab[:-1], reference, source="ann.png")
    only_bg = np.where(lab == 0, 0, 255).astype(np.uint8)
    with pytest.raises(LodeInputError, match="at least two classes"):
        fit_image(rgb, only_bg, reference, source="ann.png")
    with pytest.raises(LodeInputError, match="no reference colour"):
        fit_image(rgb, lab, {0: reference[0], 1: reference[1]}, source="ann.png")
    bad = tmp_path / "m.json"
    bad.write_text("{}")
    with pytest.raises(LodeInputError, match="m.json"):
        load_matrices(bad)


def test_matrices_save_and_load(tmp_path, sections):
    reference, tests = sections
    rgb, lab = tests[1]
    m = fit_series([(rgb, partial_annotation(lab))], reference)
    save_matrices(tmp_path / "ccm.json", {"a": m}, "series")
    back = load_matrices(tmp_path / "ccm.json")["a"]
    np.testing.assert_array_equal(back.matrix, m.matrix)
    assert back.gamma == m.gamma
