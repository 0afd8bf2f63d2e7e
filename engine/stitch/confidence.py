"""How far each placed frame is likely to be from the truth, from the edges' agreement with one another.

Per edge, two residuals of its pairwise transform against the global solution: ``fit`` (with the
edge in the solve, which pulls the solution towards it) and ``loo`` (leave-one-edge-out: the
rest of the graph alone predicts the pair), both with the robust solve's final weights (an edge
the soft-L1 loss discounted does not spoil its neighbours' ``loo``). For least squares with independent edge errors of
size σ, ``fit² ≈ σ²(1 - h)`` and ``loo² ≈ σ²/(1 - h)`` (``h``: the edge's leverage), so
``σ ≈ √(fit · loo)``. Each edge's σ is then propagated through the linear solve to every frame
(a random similarity of that size on the edge's points), and the global similarity, which no
stitch can know, is projected out: what is left is each frame's predicted error in the same
terms as :func:`engine.stitch.evaluate.alignment_rms`. Homographies (3×3 transforms, the
``homography`` model) go through the same algebra on the solve's Jacobian at the solution, with
8 parameters per frame, and the global homography is projected out instead.

An edge whose removal splits the graph (a bridge) cannot be checked: the frames on its smaller
side are supported by that one edge, and its σ is taken as the median of the checked edges'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from engine.stitch.align import (
    Alignment,
    AlignOptions,
    edge_points,
    edge_system,
    homography_params,
    homography_system,
    params_of,
    point_jacobian,
)
from engine.stitch.register import Edge, apply, projective

UNCHECKED_SIGMA_PX = 0.25


@dataclass
class Confidence:
    """Predicted error (px) of every placed frame; per edge ``fit``, ``loo`` (``None`` for a bridge) and σ;
    ``one_edge``: frames supported by a single edge, with that edge."""

    frame_error_px: dict[int, float] = field(default_factory=dict)
    edge_fit_px: dict[tuple[int, int], float] = field(default_factory=dict)
    edge_loo_px: dict[tuple[int, int], float | None] = field(default_factory=dict)
    edge_sigma_px: dict[tuple[int, int], float] = field(default_factory=dict)
    one_edge: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def rms_px(self) -> float | None:
        v = list(self.frame_error_px.values())
        return float(np.sqrt(np.mean(np.square(v)))) if v else None


def _split(n: int, pairs: list[tuple[int, int]], drop: int) -> np.ndarray | None:
    """Component labels of the graph without edge ``drop``, or ``None`` if it stays connected."""
    ij = np.array([p for k, p in enumerate(pairs) if k != drop], int).reshape(-1, 2)
    g = sp.coo_matrix((np.ones(len(ij)), (ij[:, 0], ij[:, 1])), shape=(n, n))
    k, comp = connected_components(g, directed=False)
    return comp if k > 1 else None


def _rms(res: np.ndarray) -> float:
    return float(np.sqrt(2 * np.mean(res**2)))


def _basis(P: np.ndarray) -> np.ndarray:
    """``(2m, 4)``: unit-RMS translation x, y, rotation and scale fields on points ``P`` (x, y rows interleaved)."""
    c = P - P.mean(0)
    rho = max(float(np.sqrt(np.mean(np.sum(c**2, axis=1)))), 1e-9)
    fields = [
        np.tile([1.0, 0.0], len(P)),
        np.tile([0.0, 1.0], len(P)),
        np.stack([-c[:, 1], c[:, 0]], 1).ravel() / rho,
        c.ravel() / rho,
    ]
    return np.stack(fields, 1)


def _frame_jacobian(grid: np.ndarray, M: np.ndarray | None = None) -> np.ndarray:
    """``(2g, 4)``: displacement of frame points ``grid`` per unit change of ``(a, b, tx, ty)``; with a 3×3 ``M``,
    ``(2g, 8)`` per unit change of its :func:`~engine.stitch.align.homography_params`."""
    if M is not None and len(M) == 3:
        return point_jacobian(M, grid).reshape(-1, 8)
    x, y = grid[:, 0], grid[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    return np.stack([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)], 1).reshape(-1, 4)


def predict_errors(
    edges: list[Edge], al: Alignment, frame_hw: tuple[int, int], opts: AlignOptions, grid: int = 6
) -> Confidence:
    """Each placed frame's predicted error against the truth after the global similarity (see the module)."""
    conf = Confidence()
    members = [k for k, m in enumerate(al.transforms) if m is not None]
    active = [e for e in edges if e.ok and (e.i, e.j) in al.edge_rms_px]
    if not active:
        return conf
    idx = {k: c for c, k in enumerate(members)}
    ref = idx[al.reference]
    mats = [al.transforms[k] for k in members]
    sub = [Edge(idx[e.i], idx[e.j], True, M=e.M, pts_i=e.pts_i, pts_j=e.pts_j) for e in active]
    homography = len(mats[ref]) == 3  # type: ignore[arg-type]
    p = 8 if homography else 4
    if homography:
        mats = [projective(m) for m in mats]  # type: ignore[arg-type]
        A, r, col, spans = homography_system(sub, mats, ref, opts)  # type: ignore[arg-type]
    else:
        A, y, col, spans = edge_system(len(members), sub, ref, mats[ref], opts)  # type: ignore[arg-type]
    d = 1.0 / np.maximum(np.sqrt(np.asarray(A.multiply(A).sum(axis=0))).ravel(), 1e-12)
    z = np.zeros(A.shape[1])
    for k, c in col.items():
        z[c : c + p] = (homography_params if homography else params_of)(mats[k]) / d[c : c + p]  # type: ignore[arg-type]
    if homography:
        y = A @ (z * d) - r
    As = (A @ sp.diags(d)).tocsr()
    if opts.loss == "soft_l1":
        sw = (1 + ((As @ z - y) / opts.loss_scale_px) ** 2) ** -0.25
        As, y = (sp.diags(sw) @ As).tocsr(), sw * y
    N = (As.T @ As).toarray()
    b = As.T @ y
    pairs = [(e.i, e.j) for e in sub]
    sigma: dict[int, float] = {}
    bridges: dict[int, np.ndarray] = {}
    for k, (r0, r1) in enumerate(spans):
        Ae, ye = As[r0:r1], y[r0:r1]
        key = (active[k].i, active[k].j)
        conf.edge_fit_px[key] = _rms(Ae @ z - ye)
        comp = _split(len(members), pairs, k)
        if comp is not None:
            bridges[k] = comp
            conf.edge_loo_px[key] = None
            continue
        ze = np.linalg.lstsq(N - (Ae.T @ Ae).toarray(), b - Ae.T @ ye, rcond=None)[0]
        loo = conf.edge_loo_px[key] = _rms(Ae @ ze - ye)
        sigma[k] = float(np.sqrt(conf.edge_fit_px[key] * loo))
    typical = float(np.median(list(sigma.values()))) if sigma else UNCHECKED_SIGMA_PX
    for k, comp in bridges.items():
        sigma[k] = typical
        for far in np.flatnonzero(comp == np.argmin(np.bincount(comp))).tolist():
            conf.one_edge.setdefault(members[far], (active[k].i, active[k].j))
    h, w = frame_hw
    g = np.stack(np.meshgrid(np.linspace(0, w - 1, grid), np.linspace(0, h - 1, grid)), -1).reshape(-1, 2)
    npts = len(g)
    H = np.zeros((2 * npts * len(members), As.shape[1]))
    for k, c in col.items():
        H[2 * npts * k : 2 * npts * (k + 1), c : c + p] = _frame_jacobian(g, mats[k]) * d[c : c + p]
    S = _frame_jacobian(np.concatenate([apply(m, g) for m in mats]), np.eye(3) if homography else None)  # type: ignore[arg-type]
    Ninv = np.linalg.pinv(N)
    mse = np.zeros(len(members))
    for k, (r0, r1) in enumerate(spans):
        P, _ = edge_points(sub[k], opts.points_per_edge)
        dz = Ninv @ (As[r0:r1].T @ (_basis(P) * (sigma[k] / 2)))
        U = H @ dz
        U -= S @ np.linalg.lstsq(S, U, rcond=None)[0]
        mse += np.sum(U.reshape(len(members), -1) ** 2, axis=1) / npts
    for k, c in idx.items():
        conf.frame_error_px[k] = float(np.sqrt(mse[c]))
    conf.edge_sigma_px = {(active[k].i, active[k].j): v for k, v in sigma.items()}
    return conf
