import numpy as np

from engine.stitch.align import solve
from engine.stitch.register import Edge, apply, compose, invert


def _similarity(s, deg, tx, ty):
    t = np.deg2rad(deg)
    return np.array([[s * np.cos(t), -s * np.sin(t), tx], [s * np.sin(t), s * np.cos(t), ty]])


def _grid_edges(truth, noise, rng, corrupt=None, side=3, size=200):
    edges = []
    n = side * side
    for i in range(n):
        for j in range(i + 1, n):
            ri, ci, rj, cj = i // side, i % side, j // side, j % side
            if abs(ri - rj) + abs(ci - cj) != 1:
                continue
            Mij = compose(invert(truth[i]), truth[j])
            if (i, j) == corrupt:
                Mij = compose(Mij, _similarity(1, 0, 6.0, -4.0))
            q = rng.uniform(0, size, (80, 2))
            p = apply(Mij, q) + rng.normal(0, noise, q.shape)
            edges.append(Edge(i, j, True, M=Mij, pts_i=p, pts_j=q, all_i=p, all_j=q))
    return edges


def _rms_after_similarity(est, truth):
    from engine.stitch.evaluate import umeyama_similarity

    q = np.stack(np.meshgrid(np.arange(0, 300, 50), np.arange(0, 200, 50)), -1).reshape(-1, 2).astype(float)
    P = np.concatenate([apply(m, q) for m in est])
    Q = np.concatenate([apply(m, q) for m in truth])
    G = umeyama_similarity(P, Q)
    return np.sqrt(np.mean(np.sum((apply(G, P) - Q) ** 2, axis=1)))


def test_global_solve_recovers_truth_and_rejects_an_inconsistent_edge():
    rng = np.random.default_rng(0)
    truth = [
        _similarity(
            1 + rng.uniform(-0.002, 0.002),
            rng.uniform(-0.3, 0.3),
            225 * (k % 3) + rng.uniform(-5, 5),
            150 * (k // 3) + rng.uniform(-5, 5),
        )
        for k in range(9)
    ]
    al = solve(9, _grid_edges(truth, 0.1, rng, corrupt=(4, 5)))
    assert all(m is not None for m in al.transforms)
    assert set(al.rejected) == {(4, 5)}
    assert _rms_after_similarity(al.transforms, truth) < 0.05
    assert max(al.edge_rms_px.values()) < 0.3


def test_large_grid_with_panorama_scale_translations():
    rng = np.random.default_rng(2)
    truth = [
        _similarity(
            1 + rng.uniform(-0.002, 0.002),
            rng.uniform(-0.3, 0.3),
            2250 * (k % 5) + rng.uniform(-6, 6),
            1500 * (k // 5) + rng.uniform(-6, 6),
        )
        for k in range(25)
    ]
    al = solve(25, _grid_edges(truth, 0.2, rng, corrupt=(12, 13), side=5, size=2000))
    assert all(m is not None for m in al.transforms) and set(al.rejected) == {(12, 13)}
    assert _rms_after_similarity(al.transforms, truth) < 0.05


def test_unconnected_frames_stay_unplaced():
    rng = np.random.default_rng(1)
    truth = [_similarity(1, 0, 225 * (k % 3), 150 * (k // 3)) for k in range(9)]
    edges = [e for e in _grid_edges(truth, 0.05, rng) if 8 not in (e.i, e.j)]
    edges.append(Edge(7, 8, False, reason="too few features"))
    al = solve(9, edges)
    assert al.transforms[8] is None and all(m is not None for m in al.transforms[:8])
