"""Predicted frame errors against the truth of synthetic edge sets, and the report's flags."""

from types import SimpleNamespace

import numpy as np

from engine.stitch.align import AlignOptions, solve
from engine.stitch.confidence import predict_errors
from engine.stitch.register import Edge, apply, compose
from tests.stitch.test_stitch_align import _grid_edges, _similarity

HW = (200, 300)


def _truth(rng, side=3):
    return [
        _similarity(
            1 + rng.uniform(-0.002, 0.002),
            rng.uniform(-0.3, 0.3),
            225 * (k % side) + rng.uniform(-5, 5),
            150 * (k // side) + rng.uniform(-5, 5),
        )
        for k in range(side * side)
    ]


def _noisy_edges(truth, rng, sigma, side):
    """Grid edges whose pairwise transforms are off by a random shift of ``sigma`` px per axis."""
    edges = []
    for e in _grid_edges(truth, 0.0, rng, side=side, size=150):
        M = compose(_similarity(1, 0, *rng.normal(0, sigma, 2)), e.M)
        edges.append(Edge(e.i, e.j, True, M=M, pts_i=apply(M, e.pts_j), pts_j=e.pts_j))
    return edges


def _true_errors(transforms, truth):
    from engine.stitch.evaluate import umeyama_similarity

    g = np.stack(np.meshgrid(np.linspace(0, 299, 6), np.linspace(0, 199, 6)), -1).reshape(-1, 2)
    P = np.concatenate([apply(m, g) for m in transforms])
    Q = np.concatenate([apply(m, g) for m in truth])
    r = (apply(umeyama_similarity(P, Q), P) - Q).reshape(len(truth), len(g), 2)
    return np.sqrt(np.mean(np.sum(r**2, axis=2), axis=1))


def test_predicted_rms_tracks_the_true_error_over_many_grids():
    ratios = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        truth = _truth(rng, 4)
        edges = _noisy_edges(truth, rng, 0.1, 4)
        al = solve(16, edges)
        conf = predict_errors(edges, al, HW, AlignOptions())
        true = _true_errors(al.transforms, truth)
        ratios.append(conf.rms_px / np.sqrt(np.mean(true**2)))
        assert not conf.one_edge and all(v is not None for v in conf.edge_loo_px.values())
    assert 0.8 < np.exp(np.mean(np.log(ratios))) < 1.3
    assert 0.6 < min(ratios) and max(ratios) < 1.6


def test_a_frame_hanging_on_one_edge_is_reported_and_flagged():
    from engine.stitch.section import StitchOptions, build_report

    rng = np.random.default_rng(3)
    truth = _truth(rng)
    edges = [e for e in _noisy_edges(truth, rng, 0.05, 3) if (e.i, e.j) != (2, 5)]
    al = solve(9, edges)
    conf = predict_errors(edges, al, HW, AlignOptions())
    assert conf.one_edge == {2: (1, 2)} and conf.edge_loo_px[(1, 2)] is None
    assert conf.edge_sigma_px[(1, 2)] > 0
    names = [f"f{k}.png" for k in range(9)]
    sec = SimpleNamespace(tiles=names, section_id="s", nominal_xy=None, stage_um=None)
    rep = build_report(
        sec, HW, edges, al, conf, al.transforms, [np.ones(3)] * 9, (1, 1), [True] * 9, StitchOptions(), {}, 0, [9.0] * 9
    )
    assert rep["flagged"] == ["f2.png"] and "supported by one edge (f1.png–f2.png)" in rep["frames"][2]["flags"][0]
    assert rep["rms_px"] == round(conf.rms_px, 4) and rep["frames"][2]["predicted_error_px"] > 0
