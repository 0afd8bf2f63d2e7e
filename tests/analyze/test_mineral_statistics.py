import math

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk

from engine.analyze.collection import analyze_store
from engine.analyze.grains import grain_lut_for, measure_labels
from engine.analyze.statistics import DEFAULT_DENSITIES, measured_section, sqrt2_edges, statistics_table
from engine.classes import LUMENSTONE
from engine.errors import LodeInputError

PX = 0.5


@pytest.fixture(scope="module")
def analysed(two_sections, tmp_path_factory):
    store, truth = two_sections
    res = analyze_store(store, tmp_path_factory.mktemp("out"), report=False)
    return pd.read_parquet(res.grains_path), pd.read_parquet(res.statistics_path), truth


def _stat(stats, name, section, code=None):
    sel = stats[(stats.statistic == name) & ((stats.section == section) if section else stats.section.isna())]
    if code is not None:
        sel = sel[sel.class_code == code]
    return sel


def test_area_fractions_are_pixel_exact(analysed):
    _, stats, truth = analysed
    totals = {}
    for name, t in truth.items():
        counts = np.bincount(t.labels.ravel(), minlength=256)
        totals[name] = counts
        for code in LUMENSTONE.codes:
            assert _stat(stats, "area_px", name, code).value.item() == counts[code]
            assert _stat(stats, "area_fraction", name, code).value.item() == pytest.approx(
                counts[code] / t.labels.size, rel=1e-12, abs=1e-15
            )
    both = totals["s1"] + totals["s2"]
    for code in LUMENSTONE.codes:
        assert _stat(stats, "area_fraction", None, code).value.item() == pytest.approx(
            both[code] / both.sum(), rel=1e-12, abs=1e-15
        )
    assert _stat(stats, "area_fraction", "s1").value.sum() == pytest.approx(1.0)


def test_grain_counts_and_mean_diameters(analysed):
    grains, stats, truth = analysed
    for name, t in truth.items():
        assert (grains.section == name).sum() == len(t.grains)
        for code in {g.code for g in t.grains}:
            true = [g for g in t.grains if g.code == code]
            assert _stat(stats, "grain_count", name, code).value.item() == len(true)
            mean_um = np.mean([g.diameter for g in true]) * PX
            assert _stat(stats, "mean_ecd", name, code).value.item() == pytest.approx(mean_um, rel=0.02)
    assert _stat(stats, "mean_ecd", "s1").unit.eq("um").all()
    g = grains[grains.section == "s1"]
    np.testing.assert_allclose(g.area_um2, g.area_px * PX * PX)
    assert g.pixel_size_um.eq(PX).all()


def test_weight_percent_from_densities(analysed):
    _, stats, truth = analysed
    counts = np.bincount(truth["s2"].labels.ravel(), minlength=256)
    mass = {c.code: counts[c.code] * DEFAULT_DENSITIES[c.name] for c in LUMENSTONE.classes}
    total = sum(mass.values())
    for code, m in mass.items():
        assert _stat(stats, "weight_percent", "s2", code).value.item() == pytest.approx(100 * m / total)
    for section in ("s1", "s2", None):
        used = _stat(stats, "density", section).set_index("class_name")
        assert used.value.to_dict() == {c.name: DEFAULT_DENSITIES[c.name] for c in LUMENSTONE.classes}
        assert used.unit.eq("g/cm3").all()


def test_size_classes_match_truth_histogram(analysed):
    _, stats, truth = analysed
    t = truth["s1"]
    rows = _stat(stats, "size_count", "s1")
    edges = np.append(np.sort(rows.size_lo.unique()), rows.size_hi.max())
    np.testing.assert_allclose(np.diff(np.log2(edges)), 0.5)
    for code in {g.code for g in t.grains}:
        ecd = [math.sqrt(4 * g.pixels / math.pi) * PX for g in t.grains if g.code == code]
        expected, _ = np.histogram(ecd, bins=edges)
        got = rows[rows.class_code == code].sort_values("size_lo").value.to_numpy()
        np.testing.assert_array_equal(got, expected)
        frac = _stat(stats, "size_area_fraction", "s1", code).value.sum()
        assert frac == pytest.approx(1.0)


def test_sqrt2_edges_cover_values():
    e = sqrt2_edges(np.array([1.0, 3.0, 10.0]))
    assert e[0] <= 1.0 and e[-1] > 10.0
    np.testing.assert_allclose(e[1:] / e[:-1], math.sqrt(2))


def _measure(lab, px=1.0, **kw):
    df, tally = measure_labels(lab, lab.shape, (64, 64), grain_lut_for(LUMENSTONE.codes, [0]))
    stats = statistics_table(
        [("x", measured_section(df, tally, px))], LUMENSTONE, [c for c in LUMENSTONE.codes if c], **kw
    )
    return df, stats


def test_liberation_and_association():
    lab = np.zeros((200, 260), np.uint8)
    lab[disk((100, 80), 40)] = 2  # galena
    lab[disk((100, 125), 15)] = 1  # chalcopyrite overlapping galena's rim: they share a boundary
    lab[disk((100, 210), 30)] = 6  # pyrite, free
    lab[disk((30, 200), 10)] = 1  # a free chalcopyrite grain
    df, stats = _measure(lab)
    lib = {int(r.class_code): r.value for r in _stat(stats, "liberation", "x").itertuples()}
    cp = df[df.class_code == 1]
    free_cp = cp[~cp.touches_ore].area_px.sum()
    assert lib[6] == 1.0 and lib[2] == 0.0
    assert lib[1] == pytest.approx(free_cp / cp.area_px.sum()) and 0 < lib[1] < 1
    bl = _stat(stats, "boundary_length", "x")

    def length(a, b):
        return bl[(bl.class_code == min(a, b)) & (bl.other_code == max(a, b))].value.item()

    assert length(2, 6) == 0 and length(1, 6) == 0
    assert length(0, 6) == pytest.approx(2 * math.pi * 30, rel=0.02)
    assert length(1, 2) > 0
    # every grain's perimeter splits into its shared boundaries (none of these grains reach the image edge)
    per_class = df.groupby("class_code").perimeter_px.sum()
    for code in (1, 2, 6):
        shared = sum(length(code, o) for o in LUMENSTONE.codes if o != code)
        assert shared == pytest.approx(per_class[code])


def test_explicit_size_classes_and_bad_edges():
    lab = np.zeros((100, 100), np.uint8)
    lab[disk((50, 50), 10)] = 5
    _, stats = _measure(lab, px=2.0, size_edges=[1, 10, 100])
    sc = _stat(stats, "size_count", "x", 5)
    assert sc.sort_values("size_lo").value.tolist() == [0, 1]
    with pytest.raises(LodeInputError):
        _measure(lab, size_edges=[10, 5])
