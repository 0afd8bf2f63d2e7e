"""Global alignment: one robust least-squares solve of every frame's similarity over all edges.

Frame ``k`` gets ``M_k`` (frame pixels → panorama pixels) with parameters
``(a, b, tx, ty)``: ``x' = a x - b y + tx``, ``y' = b x + a y + ty``. An edge (i, j)
with pairwise ``M_ij`` (j → i) asks ``M_i(M_ij q) = M_j(q)`` at points ``q`` of its
overlap; the residuals are linear in the parameters, so the exact linear least-squares
solution starts a robust (soft-L1) refinement. Edges whose residual stays far
above the rest (inconsistent loops) are dropped one at a time and the solve repeated.

With ``AlignOptions.model = "homography"`` (stages that tilt) every frame instead gets a
homography ``M_k`` (3×3, ``M_k[2, 2] = 1``: 8 parameters; the reference frame is held at its
prior), fitted by the same robust loss over the same edge points from the similarity solution,
in each round of edge rejection; its residuals are not linear, so the Jacobian is that of the
projective divide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.optimize import least_squares
from scipy.sparse.csgraph import connected_components

from engine.stitch.register import MODELS, Edge, Model, apply, projective


@dataclass(frozen=True)
class AlignOptions:
    points_per_edge: int = 64
    model: Model = "similarity"
    reject_px: float = 1.0
    reject_factor: float = 4.0
    loss: str = "soft_l1"
    loss_scale_px: float = 0.5
    residual_gate_px: float = 10.0
    residual_trim: float = 0.1

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, not {self.model!r}")


@dataclass
class Alignment:
    """Solved transforms (``None`` for unplaced frames), per-edge residuals and the rejected edges.

    Edge residuals are measured on every match within ``residual_gate_px`` of the
    global solution (not just the RANSAC inliers), so an unmodelled lens shows; the
    RMS leaves out the worst ``residual_trim`` of them (stray mismatches).
    """

    transforms: list[np.ndarray | None]
    reference: int
    edge_rms_px: dict[tuple[int, int], float] = field(default_factory=dict)
    edge_max_px: dict[tuple[int, int], float] = field(default_factory=dict)
    edge_points: dict[tuple[int, int], int] = field(default_factory=dict)
    rejected: dict[tuple[int, int], str] = field(default_factory=dict)


def _params_to_mat(p: np.ndarray) -> np.ndarray:
    a, b, tx, ty = p
    return np.array([[a, -b, tx], [b, a, ty]])


def edge_points(e: Edge, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.linspace(0, len(e.pts_j) - 1, min(k, len(e.pts_j))).astype(int)
    q = e.pts_j[idx]
    if e.M is None:
        raise ValueError(f"edge {e.i}-{e.j} has no pairwise transform")
    return apply(e.M, q), q


def _rows(P: np.ndarray, col0: int, sign: float, n_params: int, row0: int) -> tuple[list, list, list]:
    """Sparse entries for ``sign · M(P)``, x rows then y rows."""
    rows, cols, vals = [], [], []
    m = len(P)
    rx = row0 + 2 * np.arange(m)
    ry = rx + 1
    x, y = P[:, 0], P[:, 1]
    for r, c, v in ((rx, 0, x), (rx, 1, -y), (rx, 2, 1.0), (ry, 0, y), (ry, 1, x), (ry, 3, 1.0)):
        rows.append(np.broadcast_to(r, (m,)))
        cols.append(np.full(m, col0 + c))
        vals.append(sign * np.broadcast_to(v, (m,)))
    return rows, cols, vals


def edge_system(
    n: int, edges: list[Edge], ref: int, ref_M: np.ndarray, opts: AlignOptions
) -> tuple[sp.csr_matrix, np.ndarray, dict[int, int], list[tuple[int, int]]]:
    """The linear system ``A x = y`` of every edge's points (x rows then y rows per point); the column of
    each free frame's ``(a, b, tx, ty)`` and each edge's row span."""
    var = [k for k in range(n) if k != ref]
    col = {k: 4 * c for c, k in enumerate(var)}
    rows: list = []
    cols: list = []
    vals: list = []
    rhs, spans = [], []
    row = 0
    fixed = params_of(ref_M)
    for e in edges:
        P, Q = edge_points(e, opts.points_per_edge)
        m = len(P)
        b = np.zeros(2 * m)
        for pts, k, sign in ((P, e.i, 1.0), (Q, e.j, -1.0)):
            if k == ref:
                b -= sign * apply(_params_to_mat(fixed), pts).ravel()
            else:
                r, c, v = _rows(pts, col[k], sign, 4 * len(var), row)
                rows += r
                cols += c
                vals += v
        rhs.append(b)
        spans.append((row, row + 2 * m))
        row += 2 * m
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(row, 4 * len(var)))
    return A, np.concatenate(rhs), col, spans


def params_of(M: np.ndarray) -> np.ndarray:
    return np.array([M[0, 0], M[1, 0], M[0, 2], M[1, 2]])


def _solve_once(n: int, edges: list[Edge], ref: int, ref_M: np.ndarray, opts: AlignOptions) -> np.ndarray:
    A, y, col, _ = edge_system(n, edges, ref, ref_M, opts)
    d = 1.0 / np.maximum(np.sqrt(np.asarray(A.multiply(A).sum(axis=0))).ravel(), 1e-12)
    As = A @ sp.diags(d)
    x0 = d * np.linalg.solve((As.T @ As).toarray(), As.T @ y)
    sol = least_squares(
        lambda x: A @ x - y,
        x0,
        jac=lambda x: A,
        loss=opts.loss,
        f_scale=opts.loss_scale_px,
        method="trf",
        tr_solver="lsmr",
        x_scale="jac",
    )
    params = np.zeros((n, 4))
    params[ref] = params_of(ref_M)
    for k, c in col.items():
        params[k] = sol.x[c : c + 4]
    return params


def homography_params(M: np.ndarray) -> np.ndarray:
    """The 8 free entries (row-major) of ``M`` (2×3 or 3×3) scaled to ``M[2, 2] = 1``."""
    return projective(M).ravel()[:8]


def point_jacobian(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``(m, 2, 8)``: derivative of ``apply(M, pts)`` (``pts`` ``(m, 2)``) by :func:`homography_params`."""
    H = projective(M)
    x, y = pts[:, 0], pts[:, 1]
    w = H[2, 0] * x + H[2, 1] * y + 1
    u, v = apply(H, pts).T
    one, zero = np.ones_like(x), np.zeros_like(x)
    Ju = np.stack([x, y, one, zero, zero, zero, -u * x, -u * y], 1)
    Jv = np.stack([zero, zero, zero, x, y, one, -v * x, -v * y], 1)
    return np.stack([Ju, Jv], 1) / w[:, None, None]


def homography_system(
    edges: list[Edge], mats: list[np.ndarray], ref: int, opts: AlignOptions
) -> tuple[sp.csr_matrix, np.ndarray, dict[int, int], list[tuple[int, int]]]:
    """Every edge's residuals ``M_i(P) - M_j(Q)`` (x, y rows per point) at frame transforms ``mats`` and their
    Jacobian by each free frame's :func:`homography_params`; the column of each free frame and each edge's
    row span (as :func:`edge_system`)."""
    var = [k for k in range(len(mats)) if k != ref]
    col = {k: 8 * c for c, k in enumerate(var)}
    rows: list = []
    cols: list = []
    vals: list = []
    res, spans = [], []
    row = 0
    for e in edges:
        P, Q = edge_points(e, opts.points_per_edge)
        m = len(P)
        res.append((apply(mats[e.i], P) - apply(mats[e.j], Q)).ravel())
        for pts, k, sign in ((P, e.i, 1.0), (Q, e.j, -1.0)):
            if k != ref:
                rows.append(np.repeat(row + np.arange(2 * m), 8))
                cols.append(np.tile(col[k] + np.arange(8), 2 * m))
                vals.append(sign * point_jacobian(mats[k], pts).ravel())
        spans.append((row, row + 2 * m))
        row += 2 * m
    J = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(row, 8 * len(var)))
    return J, np.concatenate(res), col, spans


def _refine_homographies(edges: list[Edge], start: list[np.ndarray], ref: int, opts: AlignOptions) -> list[np.ndarray]:
    """Every frame's homography (3×3) from ``start`` (frame → panorama, ``start[ref]`` held), by the robust loss."""
    mats = [projective(m) for m in start]
    _, _, col, _ = homography_system(edges, mats, ref, opts)

    def at(x: np.ndarray) -> list[np.ndarray]:
        return [mats[k] if k == ref else np.append(x[col[k] : col[k] + 8], 1.0).reshape(3, 3) for k in range(len(mats))]

    x0 = np.zeros(8 * len(col))
    for k, c in col.items():
        x0[c : c + 8] = homography_params(mats[k])
    sol = least_squares(
        lambda x: homography_system(edges, at(x), ref, opts)[1],
        x0,
        jac=lambda x: homography_system(edges, at(x), ref, opts)[0],
        loss=opts.loss,
        f_scale=opts.loss_scale_px,
        method="trf",
        tr_solver="lsmr",
        x_scale="jac",
    )
    return at(sol.x)


def solve(
    n: int,
    edges: list[Edge],
    reference: int | None = None,
    reference_M: np.ndarray | None = None,
    opts: AlignOptions = AlignOptions(),
) -> Alignment:
    """Place every frame reachable from ``reference`` (held at ``reference_M``, 2×3 or 3×3; the identity when
    ``None``) through good edges; reject inconsistent edges. Transforms are 2×3 similarities, or 3×3
    homographies with ``opts.model = "homography"``."""
    good = [e for e in edges if e.ok]
    rejected: dict[tuple[int, int], str] = {}
    while True:
        comp, ref = _component(n, good, reference)
        members = [k for k in range(n) if comp[k] == comp[ref]] if ref is not None else []
        active = [e for e in good if comp[e.i] == comp[ref] and comp[e.j] == comp[ref]] if ref is not None else []
        transforms: list[np.ndarray | None] = [None] * n
        ref_M = reference_M if reference_M is not None else np.eye(2, 3)
        if opts.model == "homography":
            ref_M = projective(ref_M)
        if not active or ref is None:
            if ref is not None:
                transforms[ref] = ref_M
            return Alignment(transforms, -1 if ref is None else ref, rejected=rejected)
        idx = {k: c for c, k in enumerate(members)}
        sub = [Edge(idx[e.i], idx[e.j], True, M=e.M, pts_i=e.pts_i, pts_j=e.pts_j) for e in active]
        params = _solve_once(len(members), sub, idx[ref], ref_M, opts)
        mats = [_params_to_mat(p) for p in params]
        if opts.model == "homography":
            mats[idx[ref]] = ref_M
            mats = _refine_homographies(sub, mats, idx[ref], opts)
        grid_rms = {}
        for e, s in zip(active, sub):
            P, Q = edge_points(s, opts.points_per_edge)
            r = apply(mats[s.i], P) - apply(mats[s.j], Q)
            grid_rms[(e.i, e.j)] = float(np.sqrt(np.mean(np.sum(r**2, axis=1))))
        worst = max(grid_rms, key=grid_rms.get)  # type: ignore[arg-type]
        limit = max(opts.reject_px, opts.reject_factor * float(np.median(list(grid_rms.values()))))
        if grid_rms[worst] > limit and len(active) > 1:
            rejected[worst] = f"inconsistent with the global solution ({grid_rms[worst]:.2f} px > {limit:.2f} px)"
            good = [e for e in good if (e.i, e.j) != worst]
            continue
        for k, c in idx.items():
            transforms[k] = mats[c]
        al = Alignment(transforms, ref, rejected=rejected)
        for e in active:
            pi, pj = (e.all_i, e.all_j) if len(e.all_i) else (e.pts_i, e.pts_j)
            r = apply(transforms[e.i], pi) - apply(transforms[e.j], pj)  # type: ignore[arg-type]
            d = np.sqrt(np.sum(r**2, axis=1))
            d = np.sort(d[d < opts.residual_gate_px])
            d = d[: max(1, int(np.ceil(len(d) * (1 - opts.residual_trim))))] if len(d) else np.array([np.inf])
            al.edge_points[(e.i, e.j)] = len(d)
            al.edge_rms_px[(e.i, e.j)] = float(np.sqrt(np.mean(d**2)))
            al.edge_max_px[(e.i, e.j)] = float(d.max())
        return al


def _component(n: int, edges: list[Edge], reference: int | None) -> tuple[np.ndarray, int | None]:
    if not edges and reference is None:
        return np.arange(n), None
    ij = np.array([(e.i, e.j) for e in edges], int).reshape(-1, 2)
    g = sp.coo_matrix((np.ones(len(ij)), (ij[:, 0], ij[:, 1])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    if reference is not None:
        return comp, reference
    sizes = np.bincount(comp, minlength=n)
    deg = np.bincount(ij.ravel(), minlength=n)
    big = np.flatnonzero(comp == np.argmax(sizes))
    return comp, int(big[np.argmax(deg[big])])
