"""Bundle adjustment of the lens's distortion terms jointly with every frame's similarity.

The checkerboard fit ``L0`` is close but not exact, and its error compounds over a grid of
frames. The overlaps constrain the lens too: a point seen in two frames sits at different radii
in each, so a wrong distortion term leaves a residual that no pair of similarities can absorb.
:func:`refine_lens` fits ``k1``, ``k2`` and the tangential ``p1``, ``p2`` (``K`` and ``k3`` held)
together with the similarity ``M_k`` of every frame that has a feature edge, minimising (robustly, as
:mod:`engine.stitch.align`) the panorama-space disagreement ``M_i(U(a; k)) - M_j(U(b; k))`` of
corresponding points. ``a``, ``b`` are the registered points mapped back to observed pixels with
``L0``; ``U(·; k)`` undistorts observed pixels with the candidate lens (``newCameraMatrix = K``,
as :mod:`engine.calibrate.capture` does). One frame of each group that feature edges join is held as
the gauge.

The terms are added one group at a time (``BundleOptions.terms``: ``k1``, ``k2``, ``(p1, p2)``),
starting from frames only with ``L0``: each round tries every group left and keeps the most
significant, while it lowers the robust cost significantly against the noise (``F = Δcost / (cost /
dof)`` per coefficient, about χ² with one degree of freedom for a term the data do not need, since
the residuals are weighted by how much the lens magnifies the points' noise; ``min_significance``).
On the ``stitch`` benchmark's 3000×2000 frames the checkerboard fit's ``p1``, ``p2`` were 1–4 % off,
which alone made 0.089 px of error against truth (0.0115 px with ``p1``, ``p2`` refined over every
inlier). The refined lens is kept only when the overlaps constrain it: enough feature points on
enough edges, a significant group, and a change of the correction over the frame's border no larger
than ``max_shift`` of the frame's diagonal. Otherwise ``L0`` comes back with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from scipy.optimize import least_squares
from scipy.sparse.csgraph import connected_components

from engine.calibrate.lens import LensModel
from engine.stitch.align import Alignment, params_of
from engine.stitch.register import Edge, fit_similarity

_TERMS = {"k1": (0,), "k2": (1,), "p": (2, 3)}


@dataclass(frozen=True)
class BundleOptions:
    """``terms``: coefficient groups tried in order (``k1``, ``k2``, ``p`` = ``p1, p2``);
    ``points_per_edge``: inliers used per edge (evenly drawn; a term the data need grows more significant
    with the points, one they do not need does not: with 256 the benchmark's 1 % error in ``p1``, ``p2``
    went unseen); ``max_shift``: a fraction of the frame's diagonal; ``loss``/``loss_scale_px``: as
    :class:`engine.stitch.align.AlignOptions`."""

    points_per_edge: int = 2048
    min_edges: int = 2
    min_points: int = 200
    terms: tuple[str, ...] = ("k1", "k2", "p")
    loss: str = "soft_l1"
    loss_scale_px: float = 0.5
    min_significance: float = 25.0
    max_shift: float = 0.01


@dataclass
class LensRefinement:
    """The lens to use (``initial`` when not ``refined``, with the ``reason``) and the frames' similarities
    in its ideal coordinates (those of frames without a feature edge are the input ones). ``terms``: the
    groups fitted; ``reason`` also says why any other group was left out.

    ``rms_before_px``: residual RMS of the frames-only fit with ``initial``; ``rms_after_px``: of the
    joint fit (the same ``points`` correspondences on ``edges`` edges). The refined lens keeps the
    checkerboard fit's ``rms_px`` and ``views``.
    """

    lens: LensModel
    initial: LensModel
    transforms: list[np.ndarray | None]
    refined: bool
    reason: str = ""
    rms_before_px: float | None = None
    rms_after_px: float | None = None
    points: int = 0
    edges: int = 0
    max_shift_px: float | None = None
    terms: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        def k12p(lens: LensModel) -> list[float]:
            return [float(v) for v in np.asarray(lens.dist_coeffs).ravel()[:4]]

        rnd = lambda v: None if v is None else round(float(v), 5)  # noqa: E731
        return {
            "checkerboard": self.initial.to_dict(),
            "refined": self.refined,
            "reason": self.reason,
            "terms": list(self.terms),
            "k1_k2_p1_p2": {"checkerboard": k12p(self.initial), "used": k12p(self.lens)},
            "dist_coeffs": np.asarray(self.lens.dist_coeffs).ravel().tolist(),
            "rms_before_px": rnd(self.rms_before_px),
            "rms_after_px": rnd(self.rms_after_px),
            "max_shift_px": rnd(self.max_shift_px),
            "points": self.points,
            "edges": self.edges,
        }


def _coeffs(lens: LensModel) -> np.ndarray | None:
    """``(k1, k2, p1, p2, k3)``, or ``None`` for a model with more terms (rational, thin prism, tilt)."""
    d = np.asarray(lens.dist_coeffs, np.float64).ravel()
    if d.size > 5 and np.any(d[5:]):
        return None
    return np.pad(d, (0, max(0, 5 - d.size)))[:5]


def _to_normalised(px: np.ndarray, K: np.ndarray) -> np.ndarray:
    y = (px[:, 1] - K[1, 2]) / K[1, 1]
    x = (px[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.stack([x, y], 1)


def _to_pixels(xy: np.ndarray, K: np.ndarray) -> np.ndarray:
    x, y = xy[:, 0], xy[:, 1]
    return np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], 1)


def _distort_normalised(xy: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brown–Conrady ``D(xy)`` ``(m, 2)`` of normalised ideal points and its Jacobian ``(m, 2, 2)``."""
    k1, k2, p1, p2, k3 = d
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    g = k1 + r2 * (2 * k2 + 3 * k3 * r2)
    out = np.stack(
        [x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], 1
    )
    off = 2 * x * y * g + 2 * p1 * x + 2 * p2 * y
    J = np.empty((len(x), 2, 2))
    J[:, 0, 0] = rad + 2 * x * x * g + 2 * p1 * y + 6 * p2 * x
    J[:, 1, 1] = rad + 2 * y * y * g + 6 * p1 * y + 2 * p2 * x
    J[:, 0, 1] = J[:, 1, 0] = off
    return out, J


def distort_points(ideal: np.ndarray, lens: LensModel) -> np.ndarray:
    """Observed pixel coordinates ``(n, 2)`` of ideal (undistorted) ones, for a 5-coefficient lens."""
    d = _coeffs(lens)
    if d is None:
        raise ValueError("only the 5-coefficient Brown–Conrady model is supported")
    K = np.asarray(lens.camera_matrix, np.float64)
    return _to_pixels(_distort_normalised(_to_normalised(np.asarray(ideal, np.float64), K), d)[0], K)


def _undistort_normalised(obs: np.ndarray, d: np.ndarray, idx: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ideal points ``(m, 2)`` with ``D(ideal) = obs`` (Newton), and their derivatives
    ``(m, 2, len(idx))`` with respect to the coefficients ``d[idx]`` by implicit differentiation."""
    xy = obs.copy()
    for _ in range(50):
        f, J = _distort_normalised(xy, d)
        step = np.linalg.solve(J, (f - obs)[:, :, None])[:, :, 0]
        xy -= step
        if not np.all(np.isfinite(xy)) or np.max(np.abs(step), initial=0.0) < 1e-15:
            break
    f, J = _distort_normalised(xy, d)
    if not np.all(np.isfinite(xy)) or np.max(np.abs(f - obs), initial=0.0) > 1e-11:
        raise FloatingPointError("the lens model is not invertible over the points")
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    dD = np.stack(
        [xy * r2[:, None], xy * (r2 * r2)[:, None], np.stack([2 * x * y, r2 + 2 * y * y], 1)]
        + [np.stack([r2 + 2 * x * x, 2 * x * y], 1), xy * (r2**3)[:, None]],
        2,
    )
    return xy, -np.linalg.solve(J, dD[:, :, list(idx)])


def undistort_points(observed: np.ndarray, lens: LensModel) -> np.ndarray:
    """Ideal pixel coordinates ``(n, 2)`` of observed ones (as :func:`engine.calibrate.lens.ideal_points`)."""
    d = _coeffs(lens)
    if d is None:
        raise ValueError("only the 5-coefficient Brown–Conrady model is supported")
    K = np.asarray(lens.camera_matrix, np.float64)
    return _to_pixels(_undistort_normalised(_to_normalised(np.asarray(observed, np.float64), K), d, ())[0], K)


def remap_points(ideal: np.ndarray, old: LensModel, new: LensModel) -> np.ndarray:
    """Ideal points ``(n, 2)`` of lens ``old`` in the ideal coordinates of lens ``new``."""
    if len(ideal) == 0:
        return np.asarray(ideal, np.float64).reshape(0, 2)
    return undistort_points(distort_points(ideal, old), new)


class _Problem:
    """Residuals ``(M_i(U(a)) - M_j(U(b))) / s`` (x, y interleaved per point) and their sparse Jacobian over
    ``[d[idx], (a, b, tx, ty) of every free frame]``.

    ``s = sqrt((g(a)² + g(b)²) / 2)`` with ``g`` the local scale of ``U`` (``det(∂U/∂obs)^½``) is how much
    ``U`` magnifies the points' own noise. Without it, a lens that shrinks the overlaps shrinks their noise
    with them, and the fit pulls the distortion that way by an amount that grows with the noise (on 300 px
    frames with 0.3 px noise, ``k1`` moved by 1.5 % and passed the significance test with nothing to fit).
    """

    def __init__(
        self,
        a: np.ndarray,
        b: np.ndarray,
        fi: np.ndarray,
        fj: np.ndarray,
        K: np.ndarray,
        d0: np.ndarray,
        idx: tuple[int, ...],
    ):
        self.K, self.d0 = K, d0
        self.obs = _to_normalised(np.concatenate([a, b]), self.K)
        self.m = len(a)
        self.f = np.concatenate([fi, fj])
        self.idx, self.nk = idx, len(idx)
        self._key: bytes | None = None

    def _eval(self, x: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, ...]:
        if self._key != x.tobytes():
            d = self.d0.copy()
            d[list(self.idx)] = x[: self.nk]
            xy, dxy = _undistort_normalised(self.obs, d, self.idx)
            A = self.K[:2, :2]
            u = xy @ A.T + self.K[:2, 2]
            du = np.einsum("ab,mbk->mak", A, dxy)
            P = np.vstack([x[self.nk :].reshape(-1, 4), fixed])
            p = P[self.f]
            al, be = p[:, 0], p[:, 1]
            w = np.stack([al * u[:, 0] - be * u[:, 1] + p[:, 2], be * u[:, 0] + al * u[:, 1] + p[:, 3]], 1)
            dw = np.stack(
                [al[:, None] * du[:, 0] - be[:, None] * du[:, 1], be[:, None] * du[:, 0] + al[:, None] * du[:, 1]], 1
            )
            inv = 1 / np.linalg.det(_distort_normalised(xy, d)[1])
            dinv = np.empty((len(xy), self.nk))
            h = 1e-7
            for c, k in enumerate(self.idx):
                hi, lo = d.copy(), d.copy()
                hi[k] += h
                lo[k] -= h
                det = [
                    np.linalg.det(_distort_normalised(xy + t * dxy[:, :, c], dd)[1]) for t, dd in ((h, hi), (-h, lo))
                ]
                dinv[:, c] = (1 / det[0] - 1 / det[1]) / (2 * h)
            m = self.m
            s = np.sqrt(0.5 * (inv[:m] + inv[m:]))
            ds = 0.25 * (dinv[:m] + dinv[m:]) / s[:, None]
            self._key, self._val = x.tobytes(), (u, w, dw, s, ds)
        return self._val

    def residuals(self, x: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        _, w, _, s, _ = self._eval(x, fixed)
        return ((w[: self.m] - w[self.m :]) / s[:, None]).ravel()

    def jacobian(self, x: np.ndarray, fixed: np.ndarray, n_free: int) -> sp.csr_matrix:
        u, w, dw, s, ds = self._eval(x, fixed)
        m, nk = self.m, self.nk
        rows_x = 2 * np.arange(m)
        rows, cols, vals = [], [], []
        if nk:
            r = w[:m] - w[m:]
            dl = ((dw[:m] - dw[m:]) - r[:, :, None] * (ds / s[:, None])[:, None, :]).reshape(2 * m, nk)
            rows.append(np.repeat(np.arange(2 * m), nk))
            cols.append(np.tile(np.arange(nk), 2 * m))
            vals.append(dl.ravel())
        for side, sign in ((slice(0, m), 1.0), (slice(m, 2 * m), -1.0)):
            f = self.f[side]
            free = f < n_free
            ux, uy = u[side, 0][free], u[side, 1][free]
            c0 = nk + 4 * f[free]
            rx = rows_x[free]
            one = np.ones_like(ux)
            for r, c, v in (
                (rx, 0, ux),
                (rx, 1, -uy),
                (rx, 2, one),
                (rx + 1, 0, uy),
                (rx + 1, 1, ux),
                (rx + 1, 3, one),
            ):
                rows.append(r)
                cols.append(c0 + c)
                vals.append(sign * v)
        J = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(2 * m, nk + 4 * n_free)
        )
        return sp.diags(np.repeat(1 / s, 2)) @ J


def _gauges(use: list[Edge], pts: list[tuple[np.ndarray, np.ndarray]], reference: int, n: int) -> list[int]:
    """One frame held per connected group of frames that feature edges join (a group free of any held frame
    could move as a whole at no cost): ``reference`` in its group, the frame with the most points in others."""
    graph = sp.coo_matrix((np.ones(len(use)), ([e.i for e in use], [e.j for e in use])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    count = np.zeros(n)
    for e, (p, _) in zip(use, pts):
        count[[e.i, e.j]] += len(p)
    if count[reference]:
        count[reference] = np.inf
    return [int(np.argmax(np.where(group == g, count, -1))) for g in np.unique(group[count > 0])]


def _fit(prob: _Problem, x0: np.ndarray, fixed: np.ndarray, n_free: int, opts: BundleOptions):
    return least_squares(
        lambda x: prob.residuals(x, fixed),
        x0,
        jac=lambda x: prob.jacobian(x, fixed, n_free),
        loss=opts.loss,
        f_scale=opts.loss_scale_px,
        method="trf",
        tr_solver="lsmr",
        x_scale="jac",
    )


def _border(hw: tuple[int, int], n: int = 9) -> np.ndarray:
    h, w = hw
    xs, ys = np.linspace(0, w - 1, n), np.linspace(0, h - 1, n)
    return np.concatenate(
        [np.stack([xs, np.zeros(n)], 1), np.stack([xs, np.full(n, h - 1.0)], 1)]
        + [np.stack([np.zeros(n), ys], 1), np.stack([np.full(n, w - 1.0), ys], 1)]
    )


def _points(e: Edge, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.linspace(0, len(e.pts_i) - 1, min(k, len(e.pts_i))).astype(int)
    return e.pts_i[idx], e.pts_j[idx]


def refine_lens(
    edges: list[Edge],
    transforms: list[np.ndarray | None],
    reference: int,
    lens: LensModel,
    opts: BundleOptions = BundleOptions(),
    on_refining: Callable[[], None] | None = None,
) -> LensRefinement:
    """Fit the distortion terms ``opts.terms`` of ``lens`` with the similarity of every frame over the inlier
    points of the feature ``edges`` (points in ``lens``'s ideal coordinates) whose frames are both placed.

    ``transforms`` (frame → panorama, 2×3 or ``None``) start the fit; ``reference`` is held as the gauge
    of its group of frames joined by feature edges, and the frame with the most points of every other
    group. Returns ``lens`` unchanged, with the reason, when the overlaps do not constrain it, or when
    ``transforms`` are homographies (3×3: the ``homography`` model, whose perspective terms would trade
    off against the distortion; not fitted yet). ``on_refining`` is called once, as the first term is
    kept (the caller can start on what a refined lens will need while the other terms are tried).
    """
    out = LensRefinement(lens, lens, list(transforms), False)
    if any(m is not None and len(m) == 3 for m in transforms):
        out.reason = "not refined with the homography model (the lens is refined with similarities only)"
        return out
    d0 = _coeffs(lens)
    if d0 is None:
        out.reason = "only the 5-coefficient Brown–Conrady model is refined"
        return out
    use = [
        e
        for e in edges
        if e.ok
        and e.method == "features"
        and len(e.pts_i)
        and transforms[e.i] is not None
        and transforms[e.j] is not None
    ]
    pts = [_points(e, opts.points_per_edge) for e in use]
    out.edges, out.points = len(use), sum(len(p) for p, _ in pts)
    if out.edges < opts.min_edges or out.points < opts.min_points:
        out.reason = (
            f"too few correspondences to constrain the lens ({out.points} points on {out.edges} feature edges; "
            f"need {opts.min_points} on {opts.min_edges})"
        )
        return out
    gauges = _gauges(use, pts, reference, len(transforms))
    free = sorted({k for e in use for k in (e.i, e.j)} - set(gauges))
    col = {k: c for c, k in enumerate(free + gauges)}
    fi = np.concatenate([np.full(len(p), col[e.i]) for e, (p, _) in zip(use, pts)])
    fj = np.concatenate([np.full(len(p), col[e.j]) for e, (p, _) in zip(use, pts)])
    a = distort_points(np.concatenate([p for p, _ in pts]), lens)
    b = distort_points(np.concatenate([q for _, q in pts]), lens)
    K = np.asarray(lens.camera_matrix, np.float64)
    fixed = np.stack([params_of(transforms[k]) for k in gauges])  # type: ignore[arg-type]
    start = np.concatenate([params_of(transforms[k]) for k in free])  # type: ignore[arg-type]
    dof = 2 * len(a) - len(start) - 5
    rms = lambda r: float(np.sqrt(np.mean(r**2) * 2))  # noqa: E731
    idx: tuple[int, ...] = ()
    terms: list[str] = []
    why = []
    try:
        fits = [_fit(_Problem(a, b, fi, fj, K, d0, idx), start, fixed, len(free), opts)]
        left = list(opts.terms)
        while left:
            prev, tried = fits[-1], {}
            for term in left:
                trial = idx + _TERMS[term]
                x0 = np.concatenate([prev.x[: len(idx)], d0[list(_TERMS[term])], prev.x[len(idx) :]])
                fit = _fit(_Problem(a, b, fi, fj, K, d0, trial), x0, fixed, len(free), opts)
                if fit.success and np.all(np.isfinite(fit.x)):
                    tried[term] = ((prev.cost - fit.cost) / max(fit.cost / dof, 1e-300) / len(_TERMS[term]), fit)
                else:
                    why.append(f"{term}: the fit did not converge ({fit.message})")
            left = [t for t in left if t in tried]
            best = max(tried, key=lambda t: tried[t][0], default=None)
            if best is None or tried[best][0] < opts.min_significance:
                why += [
                    f"{t}: does not lower the residual significantly (RMS {rms(prev.fun):.4f} → "
                    f"{rms(f.fun):.4f} px, F {F:.1f} < {opts.min_significance})"
                    for t, (F, f) in tried.items()
                ]
                break
            fits.append(tried[best][1])
            idx += _TERMS[best]
            terms.append(best)
            left.remove(best)
            if on_refining is not None and len(terms) == 1:
                on_refining()
    except FloatingPointError as exc:
        out.reason = str(exc)
        return out
    before, after, nk = fits[0], fits[-1], len(idx)
    out.rms_before_px, out.rms_after_px = rms(before.fun), rms(after.fun)
    out.reason = "; ".join(why)
    if not idx:
        return out
    d = d0.copy()
    d[list(idx)] = after.x[:nk]
    new = LensModel(lens.camera_matrix, d, lens.frame_hw, lens.rms_px, lens.views)
    border = distort_points(_border(lens.frame_hw), lens)
    out.max_shift_px = float(np.max(np.hypot(*(undistort_points(border, new) - _border(lens.frame_hw)).T)))
    limit = opts.max_shift * float(np.hypot(*lens.frame_hw))
    if out.max_shift_px > limit:
        out.reason = f"implausible change: the correction moves by {out.max_shift_px:.2f} px > {limit:.2f} px"
        return out
    out.lens, out.refined, out.terms = new, True, tuple(terms)
    mats = after.x[nk:].reshape(-1, 4)
    for k in free:
        a_, b_, tx, ty = mats[col[k]]
        out.transforms[k] = np.array([[a_, -b_, tx], [b_, a_, ty]])
    return out


def refine_section_lens(
    edges: list[Edge],
    al: Alignment,
    lens: LensModel,
    enabled: bool = True,
    opts: BundleOptions = BundleOptions(),
    on_refining: Callable[[], None] | None = None,
) -> tuple[LensRefinement, list[Edge]]:
    """:func:`refine_lens` over the edges that ``al`` kept (unless not ``enabled``), and every edge with its
    points (and ``M``, refitted to its inliers) in the ideal coordinates of the lens it returns (the same
    edges when the lens is not refined)."""
    if not enabled:
        return LensRefinement(lens, lens, list(al.transforms), False, "lens refinement is off"), edges
    kept = [e for e in edges if (e.i, e.j) in al.edge_rms_px]
    fit = refine_lens(kept, al.transforms, al.reference, lens, opts, on_refining)
    if not fit.refined:
        return fit, edges
    moved = []
    for e in edges:
        if not e.ok:
            moved.append(e)
            continue
        pts_i, pts_j, all_i, all_j = (remap_points(p, lens, fit.lens) for p in (e.pts_i, e.pts_j, e.all_i, e.all_j))
        M = fit_similarity(pts_j, pts_i) if len(pts_i) >= 2 else e.M
        moved.append(replace(e, M=M, pts_i=pts_i, pts_j=pts_j, all_i=all_i, all_j=all_j))
    return fit, moved
