import numpy as np

from engine.stitch.exposure import overlap_means, solve_gains
from engine.stitch.seams import seam_boundary, seam_labels
from engine.synth.captures import textured_section


def test_gains_undo_per_frame_exposure():
    rng = np.random.default_rng(0)
    scene = textured_section((120, 300), seed=1).astype(np.float64)
    true = np.array([[1.05, 0.97, 1.0], [0.95, 1.02, 0.98], [1.0, 1.01, 1.02]])
    imgs, masks, corners = [], [], []
    for k in range(3):
        x = 90 * k
        imgs.append(np.clip(scene[:, x : x + 120] * true[k] + rng.normal(0, 1, (120, 120, 3)), 0, 255))
        masks.append(np.full((120, 120), 255, np.uint8))
        corners.append((x, 0))
    g = solve_gains(3, overlap_means(imgs, masks, corners))
    comp = g * true
    assert np.abs(comp / comp.mean(axis=0) - 1).max() < 0.005
    assert np.allclose(g.mean(axis=0), 1.0)


def test_graph_cut_seam_avoids_an_object_seen_by_one_frame_only():
    base = textured_section((100, 200), seed=3)
    a = base[:, :130].copy()
    b = base[:, 70:].copy()
    a[40:60, 95:110] = 255
    m = np.full((100, 130), 255, np.uint8)
    labels = seam_labels([a, b], [m, m], [(0, 0), (70, 0)], (100, 200))
    assert (labels >= 0).all()
    blob = labels[40:60, 95:110]
    assert (blob == blob.flat[0]).all()
    assert (labels[:, :70] == 0).all() and (labels[:, 130:] == 1).all()
    assert seam_boundary(labels)[:, 70:130].any()
