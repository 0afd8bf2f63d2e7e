import numpy as np

from engine.geophys.synth import SurveyConfig, axis_raster, make_survey

SIMPLE = SurveyConfig(
    shape=(128, 128),
    families=(1, 1),
    dykes_per_256=(2, 2),
    plugs_per_256=(0, 0),
    contacts=(0, 0),
    regional_nt=(0.0, 0.0),
    noise_nt=0.0,
    remanent_fraction=0.0,
    reversed_fraction=0.0,
    dip=(90.0, 90.0),
    width=(1.0, 1.0),
    length=(60.0, 100.0),
)


def test_same_seed_same_survey_and_different_seed_differs():
    a, b, c = make_survey(3), make_survey(3), make_survey(4)
    np.testing.assert_array_equal(a.anomaly, b.anomaly)
    assert len(a.axes) == len(b.axes) and all(np.array_equal(x, y) for x, y in zip(a.axes, b.axes))
    assert not np.array_equal(a.anomaly, c.anomaly)


def test_truth_axes_sit_on_anomaly_crests_at_the_pole():
    s = make_survey(11, SIMPLE, inclination=90.0, declination=0.0)
    assert s.axes
    hits = total = 0
    for axis in s.axes:
        p0, p1 = axis[0], axis[-1]
        d = (p1 - p0) / np.linalg.norm(p1 - p0)
        normal = np.array([-d[1], d[0]])
        for t in np.linspace(0.2, 0.8, 7):
            centre = p0 + t * (p1 - p0)
            offsets = np.arange(-6, 7)
            pts = np.round(centre + offsets[:, None] * normal).astype(int)
            ok = (pts >= 0).all(1) & (pts < 128).all(1)
            if ok.sum() < 13:
                continue
            total += 1
            profile = np.abs(s.anomaly[pts[:, 0], pts[:, 1]])
            hits += abs(offsets[np.argmax(profile)]) <= 1
    assert total >= 5 and hits / total >= 0.9


def test_target_band_covers_axes_and_is_narrow():
    s = make_survey(5, SurveyConfig(shape=(128, 128)))
    thin = axis_raster(s.axes, (128, 128), band_cells=0)
    assert thin.sum() > 0
    assert (s.target[thin > 0] == 1).all()
    assert s.target.sum() <= 3.5 * thin.sum()
    assert s.anomaly.dtype == np.float32 and np.isfinite(s.anomaly).all()


def test_noise_level_matches_config():
    quiet = make_survey(7, SurveyConfig(shape=(64, 64), noise_nt=0.0))
    noisy = make_survey(7, SurveyConfig(shape=(64, 64), noise_nt=0.5))
    assert abs(float(np.std(noisy.anomaly - quiet.anomaly)) - 0.5) < 0.03
