import numpy as np
import pytest

from engine.errors import LodeInputError
from engine.synth import Section, SectionSpec
from engine.train.sampler import BalancedPatchSampler, SamplerParams, Tally, class_area_maps


def _masks(n=4, size=(384, 512)):
    return [
        Section(SectionSpec(seed=20 + i, association="paper", grain_diameter=30)).labels(0, 0, *size)[0]
        for i in range(n)
    ]


def test_area_maps_equal_brute_force_patch_counts():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (64, 80), dtype=np.uint8)
    maps = class_area_maps(mask, [0, 1, 2], patch=16, downscale=1)
    for cy, cx in [(8, 8), (20, 33), (48, 71), (56, 40)]:
        for i in range(3):
            assert maps[i, cy, cx] == (mask[cy - 8 : cy + 8, cx - 8 : cx + 8] == i).sum()
    assert maps[:, :8, :].sum() == 0 and maps[:, :, 73:].sum() == 0 and maps[:, 57:, :].sum() == 0
    assert maps[:, 8, 8].sum() == 256 and maps[:, 56, 72].sum() == 256


def test_two_seeds_share_no_patch():
    masks = _masks()
    params = SamplerParams(classes=tuple(range(15)), patch=96, downscale=4)
    a = list(BalancedPatchSampler(masks, params, seed=1, stream=(0, 2)).patches(300))
    b = list(BalancedPatchSampler(masks, params, seed=2, stream=(1, 2)).patches(300))
    assert len(set(a)) > 200 and not (set(a) & set(b))
    same_seed = list(BalancedPatchSampler(masks, params, seed=1, stream=(0, 2)).patches(300))
    assert same_seed == a


@pytest.mark.parametrize("cached", [False, True])
def test_alpha_changes_the_maps_cached_or_not(tmp_path, cached):
    masks = _masks(2)
    cache = tmp_path if cached else None
    s1 = BalancedPatchSampler(masks, SamplerParams(classes=tuple(range(15)), patch=96, alpha=1.0), 0, cache)
    s2 = BalancedPatchSampler(masks, SamplerParams(classes=tuple(range(15)), patch=96, alpha=3.0), 0, cache)
    if cached:
        assert len(list(tmp_path.glob("*.npy"))) == 2
    nz = s1.maps[0] > 1
    assert np.allclose(s2.maps[0][nz], s1.maps[0][nz] ** 3, rtol=1e-4)


def test_balanced_sampling_beats_uniform_and_honours_class_set():
    masks = _masks()
    classes = (0, 1, 2, 3, 5, 6, 8, 9)
    masks = [np.where(np.isin(m, classes), m, 0).astype(np.uint8) for m in masks]
    bal = BalancedPatchSampler(masks, SamplerParams(classes=classes, patch=96, downscale=4), seed=0)
    uni = BalancedPatchSampler(masks, SamplerParams(classes=classes, patch=96, downscale=4, strength=0.0), seed=0)
    list(bal.patches(400))
    list(uni.patches(400))
    assert bal.tally.max_min_ratio() < uni.tally.max_min_ratio() / 3
    assert bal.tally.balancing_quality() > uni.tally.balancing_quality()
    with pytest.raises(LodeInputError, match="unknown class codes"):
        BalancedPatchSampler(_masks(1), SamplerParams(classes=classes, patch=96), seed=0)


def test_tallies_of_streams_add_to_the_union():
    masks = _masks(2)
    params = SamplerParams(classes=tuple(range(15)), patch=96, downscale=4)
    s = [BalancedPatchSampler(masks, params, seed=k) for k in range(3)]
    for x in s:
        list(x.patches(50))
    union = s[0].tally + s[1].tally + s[2].tally
    assert union.patches == 150 and union.pixels.sum() == 150 * 96 * 96
    assert isinstance(union, Tally)


def test_best_of_candidates_balances_better_than_single_draws():
    masks = _masks()
    present = tuple(sorted(set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist())))
    params = dict(classes=present, patch=96, downscale=4)
    ratios = {}
    for k in (1, 8):
        s = BalancedPatchSampler(masks, SamplerParams(**params, candidates=k), seed=0)
        list(s.patches(400))
        ratios[k] = s.tally.max_min_ratio()
    assert ratios[8] < 0.8 * ratios[1]
