import harmonica as hm
import numpy as np
import pytest

from engine.geophys.forward import FourierForward, magnetic_anomaly
from engine.geophys.transforms import reduce_to_pole, total_gradient_amplitude, upward_continue

N, CELL = 128, 50.0
R0, R1, C0, C1 = 50, 70, 55, 60
TOP, BOTTOM = 150.0, 1000.0


def _prism_map() -> np.ndarray:
    mag = np.zeros((N, N))
    mag[R0:R1, C0:C1] = 2.0
    return mag


def _harmonica(finc: float, fdec: float, minc: float, mdec: float) -> np.ndarray:
    east = north = np.arange(N) * CELL
    e, n = np.meshgrid(east, north)
    prism = [
        east[C0] - CELL / 2,
        east[C1 - 1] + CELL / 2,
        north[R0] - CELL / 2,
        north[R1 - 1] + CELL / 2,
        -BOTTOM,
        -TOP,
    ]
    m = hm.magnetic_angles_to_vec(2.0, minc, mdec)
    b = hm.prism_magnetic((e, n, np.zeros_like(e)), [prism], tuple(np.atleast_1d(v) for v in m), field="b")
    return hm.total_field_anomaly(b, finc, fdec)


@pytest.mark.parametrize(
    ("finc", "fdec", "minc", "mdec"),
    [
        (60.0, 10.0, None, None),  # induced, northern hemisphere
        (-45.0, -20.0, None, None),  # induced, southern hemisphere
        (70.0, 5.0, -30.0, 120.0),  # remanent, reversed-ish
        (35.0, 0.0, None, None),  # low inclination
        (-30.0, 15.0, 50.0, -60.0),  # southern field with remanence
    ],
)
def test_matches_harmonica_prism_within_one_percent_of_peak(finc, fdec, minc, mdec):
    ours = magnetic_anomaly(_prism_map(), CELL, TOP, BOTTOM, finc, fdec, minc, mdec, pad=1.0)
    ref = _harmonica(finc, fdec, finc if minc is None else minc, fdec if mdec is None else mdec)
    assert np.abs(ours - ref).max() <= 0.01 * np.abs(ref).max()


def test_layers_superpose_and_split_depths():
    mag = _prism_map()
    fwd = FourierForward(mag.shape, CELL, 55.0, 7.0, pad=1.0)
    fwd.add(mag, TOP, 400.0)
    fwd.add(mag, 400.0, BOTTOM)
    whole = magnetic_anomaly(mag, CELL, TOP, BOTTOM, 55.0, 7.0, pad=1.0)
    np.testing.assert_allclose(fwd.anomaly(), whole, atol=1e-9 * np.abs(whole).max())


def test_reduction_to_pole_recovers_polar_anomaly():
    mag = _prism_map()
    pole = magnetic_anomaly(mag, CELL, TOP, BOTTOM, 90.0, 0.0, pad=1.0)
    for inc, dec in ((45.0, 20.0), (-50.0, 10.0)):
        rtp = reduce_to_pole(magnetic_anomaly(mag, CELL, TOP, BOTTOM, inc, dec, pad=1.0), CELL, inc, dec)
        assert np.abs(rtp - pole).max() <= 0.02 * np.abs(pole).max()


def test_upward_continuation_equals_deeper_source():
    mag = _prism_map()
    up = upward_continue(magnetic_anomaly(mag, CELL, TOP, BOTTOM, 90.0, 0.0, pad=1.0), CELL, 200.0)
    deeper = magnetic_anomaly(mag, CELL, TOP + 200.0, BOTTOM + 200.0, 90.0, 0.0, pad=1.0)
    assert np.abs(up - deeper).max() <= 0.01 * np.abs(deeper).max()


def test_total_gradient_amplitude_peaks_over_thin_dyke_and_keeps_holes():
    mag = np.zeros((N, N))
    mag[:, 64] = 3.0
    tga = total_gradient_amplitude(magnetic_anomaly(mag, CELL, 100.0, 2000.0, 90.0, 0.0, pad=1.0), CELL)
    assert abs(int(np.argmax(tga[64])) - 64) <= 1
    holed = magnetic_anomaly(mag, CELL, 100.0, 2000.0, 90.0, 0.0)
    holed[10:20, 10:20] = np.nan
    out = total_gradient_amplitude(holed, CELL)
    assert np.isnan(out[10:20, 10:20]).all() and np.isfinite(out[30:, 30:]).all()
