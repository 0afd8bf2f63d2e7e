"""Synthetic XPL stacks (isotropic dark, anisotropic 90°-periodic) and XPL → PPL registration."""

from __future__ import annotations

import numpy as np
import pytest

from engine.calibrate.colour import delta_e_linear, linearize
from engine.errors import LodeInputError
from engine.register.xpl import XplOptions, register_stack, register_xpl, stack_channels, warp_to_ppl, xpl_channel_names
from engine.synth.section import Section
from engine.synth.xpl import LOOKALIKE_RGB, GrainMap, XplConfig, render_xpl_stack, s3_lookalike_spec, xpl_scene

H, W = 512, 683


@pytest.fixture(scope="module")
def stack():
    return render_xpl_stack(s3_lookalike_spec(3), H, W, XplConfig(seed=3))


def test_registration_recovers_rotation_and_translation(stack):
    regs = register_stack(stack.ppl, stack.xpl)
    centre = np.array([(W - 1) / 2, (H - 1) / 2])
    corners = np.array([[0, 0], [W - 1, 0], [0, H - 1], [W - 1, H - 1]], np.float64)
    assert len(regs) == 6
    for k, r in enumerate(regs):
        truth = stack.transforms[k]
        assert abs(r.rotation_deg - stack.rotation_deg(k)) < 0.05, (k, r.rotation_deg, stack.rotation_deg(k))
        shift = (r.M[:, :2] @ centre + r.M[:, 2]) - (truth[:, :2] @ centre + truth[:, 2])
        assert np.hypot(*shift) < 0.5
        assert np.abs(corners @ (r.M - truth)[:, :2].T + (r.M - truth)[:, 2]).max() < 0.5
    # the stage angles are large: the registration is not merely the identity
    assert abs(stack.rotation_deg(5) - 75.0) < 1.0


def test_truth_convention_warps_xpl_onto_ppl(stack):
    """Resampling an XPL capture with its truth transform reproduces the scene in PPL pixels."""
    section = Section(s3_lookalike_spec(3))
    grains = GrainMap.of(section, 0, 0, H, W)
    k = 3
    scene = xpl_scene(grains, stack.ppl, stack.angles[k], XplConfig(seed=3), section.spec.colors)
    warped = warp_to_ppl(stack.xpl[k], stack.transforms[k], (H, W)).astype(np.float32)
    inner = (slice(60, H - 60), slice(60, W - 60))
    err = np.abs(warped[inner] - scene[inner])
    assert np.median(err) < 2.0
    shifted = warp_to_ppl(stack.xpl[k], stack.transforms[k] + [[0, 0, 3.0], [0, 0, 0]], (H, W)).astype(np.float32)
    assert np.abs(shifted[inner] - scene[inner]).mean() > 1.5 * err.mean()


def test_isotropic_dark_anisotropic_periodic():
    spec = s3_lookalike_spec(4)
    section = Section(spec)
    ppl, _ = section.render(0, 0, 256, 256)
    grains = GrainMap.of(section, 0, 0, 256, 256)
    cfg = XplConfig()
    scenes = {a: xpl_scene(grains, ppl, a, cfg, spec.colors) for a in (0.0, 20.0, 45.0, 90.0, 110.0)}
    np.testing.assert_allclose(scenes[0.0], scenes[90.0], atol=1e-3)
    np.testing.assert_allclose(scenes[20.0], scenes[110.0], atol=1e-3)
    lab = grains.labels
    pyrite = lab == 6
    for s in scenes.values():
        assert s[pyrite].mean() < 0.12 * ppl[pyrite].mean()
    aniso = np.isin(grains.grain_id, np.flatnonzero(np.isin(grains.codes, [9, 12, 13])))
    changes = np.abs(scenes[0.0] - scenes[45.0]).sum(-1)
    assert np.median(changes[aniso]) > 20.0
    assert changes[pyrite].max() < 1e-3
    # in PPL the anisotropic look-alikes sit close to pyrite
    lin = {c: linearize(np.asarray(LOOKALIKE_RGB[c])) for c in (6, 9, 13)}
    assert delta_e_linear(lin[9], lin[6]) < 5 and delta_e_linear(lin[13], lin[6]) < 5


def test_stack_channels(stack):
    regs = register_stack(stack.ppl, stack.xpl[:2])
    out = stack_channels(stack.ppl, stack.xpl[:2], [r.M for r in regs])
    assert out.shape == (H, W, 5) and out.dtype == np.uint8
    assert np.array_equal(out[..., :3], stack.ppl)
    rgb = stack_channels(stack.ppl, stack.xpl[:2], [r.M for r in regs], mode="rgb")
    assert rgb.shape == (H, W, 9)
    assert xpl_channel_names([0, 15]) == ["XPL0", "XPL15"]
    assert len(xpl_channel_names([0, 15], "rgb")) == 6


def test_featureless_xpl_raises_naming_it(stack):
    blank = np.full_like(stack.xpl[0], 7)
    with pytest.raises(LodeInputError, match="xpl/015.png"):
        register_xpl(stack.ppl, blank, XplOptions(), source="xpl/015.png")
