"""Model-based acceptance (slow): colour correction restores a model's accuracy; XPL channels help
on anisotropic minerals. Same code and defaults as ``benchmarks.colour`` / ``benchmarks.xpl``."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_corrected_casts_keep_95_percent_of_uncast_accuracy(ray_session, tmp_path):
    from benchmarks.colour import model_accuracy

    r = model_accuracy(tmp_path, steps=400, seed=0)
    assert r["annotation_fraction_max"] <= 0.35
    assert r["pixel_accuracy_cast_corrected"] >= 0.95 * r["pixel_accuracy_uncast"]
    assert r["pixel_accuracy_cast_corrected"] > r["pixel_accuracy_cast_uncorrected"]


def test_six_xpl_channels_beat_ppl_only_on_anisotropic_classes(ray_session, tmp_path):
    from benchmarks.xpl import models

    r = models(tmp_path, steps=500, seed=0, n_train=8, n_test=3, size=(384, 512))
    assert r["ppl_xpl6"]["channels"] == 9 and r["ppl"]["channels"] == 3
    assert r["anisotropic_iou_gain"] >= 0.05
