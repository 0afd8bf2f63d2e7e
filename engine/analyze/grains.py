"""Grain table: connected components of every mineral, block-wise, merged exactly across blocks.

Each block is labelled on its own (8- or 4-connected regions of equal class code); a
block also reads a one-pixel halo so that everything measured from pixel neighbour
pairs (perimeter crossings, contacts with other minerals, the association tally) is
counted exactly once over the image. Components that meet across a block boundary are
joined with a union-find (graph connected components) over the boundary pixel pairs,
and their additive measures, bounding boxes and convex hulls are combined.

Perimeter is the Cauchy–Crofton estimate over the four pixel-lattice directions,
``P = π/8 · (N_axis + N_diag / √2)`` with N the number of boundary crossings along
lattice lines (unbiased for discs; the image edge counts as a boundary). Feret
diameters are taken on the convex hull of the pixel squares (pixel corners).
"""

from __future__ import annotations

import math
import pickle
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.measure import label as sk_label

from engine.io import fs
from engine.io.atomic import atomic_write_bytes
from engine.raster import BlockStage, Unit, block_grid, units_of
from engine.raster.runner import RunOptions, run_stage

OUTSIDE = -1
_AXIS = ((0, 1), (0, -1), (1, 0), (-1, 0))
_DIAG = ((1, 1), (1, -1), (-1, 1), (-1, -1))
CROFTON = math.pi / 8.0
INV_SQRT2 = 1.0 / math.sqrt(2.0)
_CORNERS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.int32)


@dataclass(frozen=True)
class ZarrSource:
    """A (y, x) label array inside a zarr store (local path or URI), opened lazily by whoever reads it."""

    store: str
    path: str

    def open(self) -> Any:
        from engine.io.ome import open_store

        return open_store(self.store)[self.path]


@dataclass
class Tally:
    """Per-image pixel counts per class code and weighted neighbour-pair crossings between codes."""

    class_px: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    crossings: np.ndarray = field(default_factory=lambda: np.zeros((256, 256), np.float64))

    def __iadd__(self, other: Tally) -> Tally:
        self.class_px += other.class_px
        self.crossings += other.crossings
        return self

    def boundary_length_px(self) -> np.ndarray:
        """(256, 256) shared boundary length in pixels between class codes (symmetric)."""
        m = CROFTON * self.crossings
        return (m + m.T) / 2.0


@dataclass
class BlockResult:
    """Everything one block contributes; component arrays are indexed by local label - 1."""

    y0: int
    x0: int
    h: int
    w: int
    codes: np.ndarray
    area: np.ndarray
    sum_y: np.ndarray
    sum_x: np.ndarray
    bbox: np.ndarray  # (n, 4) global y0, x0, y1, x1 half-open
    n_axis: np.ndarray
    n_diag: np.ndarray
    touches_ore: np.ndarray
    hulls: list[np.ndarray]  # (k, 2) x, y pixel-corner hull per component
    feret: np.ndarray  # (n, 2) max, min; NaN for components that reach the block edge
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    tally: Tally


def feret_diameters(hull: np.ndarray) -> tuple[float, float]:
    """Max and min caliper width of a convex polygon given as ordered (k, 2) vertices."""
    out = feret_batch([hull])
    return float(out[0, 0]), float(out[0, 1])


def _feret_padded(p: np.ndarray, valid_edge: np.ndarray) -> np.ndarray:
    d = p[:, :, None, :] - p[:, None, :, :]
    fmax = np.sqrt((d * d).sum(-1).max(axis=(1, 2)))
    e = np.roll(p, -1, axis=1) - p
    ln = np.hypot(e[..., 0], e[..., 1])
    ok = valid_edge & (ln > 0)
    n = np.stack([-e[..., 1], e[..., 0]], -1) / np.where(ok, ln, 1.0)[..., None]
    widths = np.abs((d * n[:, None, :, :]).sum(-1)).max(axis=1)
    widths[~ok] = np.inf
    return np.stack([fmax, widths.min(axis=1)], 1)


def feret_batch(hulls: Sequence[np.ndarray]) -> np.ndarray:
    """(n, 2) max and min Feret diameters of convex polygons (ordered vertices), vectorised by size."""
    out = np.zeros((len(hulls), 2))
    sizes = np.array([len(h) for h in hulls], np.int64)
    for lo, hi in ((0, 8), (8, 16), (16, 32), (32, 64), (64, 128)):
        idx = np.nonzero((sizes > lo) & (sizes <= hi))[0]
        for chunk in np.array_split(idx, max(1, len(idx) * hi * hi // 2_000_000 + 1)):
            if not len(chunk):
                continue
            p = np.empty((len(chunk), hi, 2))
            valid = np.zeros((len(chunk), hi), bool)
            for r, i in enumerate(chunk):
                k = sizes[i]
                p[r, :k] = hulls[i]
                p[r, k:] = hulls[i][0]
                valid[r, :k] = True
            out[chunk] = _feret_padded(p, valid)
    for i in np.nonzero(sizes > 128)[0]:
        out[i] = _feret_padded(np.asarray(hulls[int(i)], np.float64)[None], np.ones((1, sizes[i]), bool))[0]
    return out


def _corner_hull(centres: np.ndarray) -> np.ndarray:
    """Convex hull (x, y vertices) of the unit pixel squares whose top-left corners are ``centres``."""
    h = cv2.convexHull(centres.reshape(-1, 1, 2)).reshape(-1, 1, 2)
    return cv2.convexHull((h + _CORNERS[None]).reshape(-1, 1, 2)).reshape(-1, 2)


def measure_block(padded: np.ndarray, y0: int, x0: int, grain_lut: np.ndarray, connectivity: int = 2) -> BlockResult:
    """Label one block and measure its components.

    Args:
        padded: (h+2, w+2) int16 class codes with a one-pixel halo (``OUTSIDE`` beyond the image).
        y0, x0: global origin of the block core.
        grain_lut: (256,) bool, True for codes that form grains (minerals measured as grains).
        connectivity: 2 for 8-connected grains, 1 for 4-connected.
    """
    h, w = padded.shape[0] - 2, padded.shape[1] - 2
    core = padded[1:-1, 1:-1]
    core_u8 = core.astype(np.uint8)
    is_grain = grain_lut[core_u8]
    work = core.astype(np.int16) + 1
    work[~is_grain] = 0
    lab = sk_label(work, background=0, connectivity=connectivity).astype(np.int32)
    n = int(lab.max())

    codes = np.zeros(n + 1, np.uint8)
    codes[lab] = core_u8
    flat = lab.ravel()
    area = np.bincount(flat, minlength=n + 1)
    rows = np.repeat(np.arange(y0, y0 + h, dtype=np.float64), w)
    sum_y = np.bincount(flat, weights=rows, minlength=n + 1)
    del rows
    cols = np.tile(np.arange(x0, x0 + w, dtype=np.float64), h)
    sum_x = np.bincount(flat, weights=cols, minlength=n + 1)
    del cols
    ore_lut = np.append(grain_lut, False)  # index -1 (outside) maps to False
    n_axis = np.zeros(n + 1, np.int64)
    n_diag = np.zeros(n + 1, np.int64)
    touches = np.zeros(n + 1, bool)
    crossings = np.zeros(256 * 256, np.float64)
    boundary = np.zeros((h, w), bool)
    for offsets, counter, weight in ((_AXIS, n_axis, 1.0), (_DIAG, n_diag, INV_SQRT2)):
        for dy, dx in offsets:
            diff = core != padded[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
            if weight == 1.0:
                boundary |= diff
            ys, xs = np.nonzero(diff)
            lv = lab[ys, xs]
            cv = core_u8[ys, xs].astype(np.int64)
            qv = padded[ys + 1 + dy, xs + 1 + dx].astype(np.int64)
            counter += np.bincount(lv, minlength=n + 1)
            touches[lv[ore_lut[qv]]] = True
            real = qv >= 0
            crossings += weight * np.bincount(cv[real] * 256 + qv[real], minlength=256 * 256)
    touches[0] = False

    boundary[0, :] = boundary[-1, :] = True
    boundary[:, 0] = boundary[:, -1] = True
    boundary &= lab > 0
    ys, xs = np.nonzero(boundary)
    bl = lab[ys, xs]
    order = np.argsort(bl, kind="stable")
    pts = np.stack([xs[order] + x0, ys[order] + y0], 1).astype(np.int32)
    first = np.searchsorted(bl[order], np.arange(1, n + 1))
    bbox = np.zeros((n, 4), np.int64)
    if n:
        bbox[:, 0] = np.minimum.reduceat(pts[:, 1], first)
        bbox[:, 1] = np.minimum.reduceat(pts[:, 0], first)
        bbox[:, 2] = np.maximum.reduceat(pts[:, 1], first) + 1
        bbox[:, 3] = np.maximum.reduceat(pts[:, 0], first) + 1
    starts = np.append(first, len(pts))
    hulls = [_corner_hull(pts[starts[i] : starts[i + 1]]) for i in range(n)]
    inner = np.nonzero((bbox[:, 0] > y0) & (bbox[:, 1] > x0) & (bbox[:, 2] < y0 + h) & (bbox[:, 3] < x0 + w))[0]
    feret = np.full((n, 2), np.nan)
    feret[inner] = feret_batch([hulls[i] for i in inner])

    class_px = np.bincount(core_u8.ravel(), minlength=256).astype(np.int64)
    return BlockResult(
        y0,
        x0,
        h,
        w,
        codes[1:],
        area[1:].astype(np.int64),
        sum_y[1:],
        sum_x[1:],
        bbox,
        n_axis[1:],
        n_diag[1:],
        touches[1:],
        hulls,
        feret,
        lab[0].copy(),
        lab[-1].copy(),
        lab[:, 0].copy(),
        lab[:, -1].copy(),
        Tally(class_px, crossings.reshape(256, 256)),
    )


class GrainStage(BlockStage):
    """Label and measure blocks: read the block plus a one-pixel halo, :func:`measure_block`, and
    persist the pickled :class:`BlockResult` under ``work`` (merged at the driver by :func:`merge_blocks`)."""

    name = "grains"

    def __init__(self, sources: dict[str, Any], work: str, grain_lut: np.ndarray, connectivity: int = 2):
        self.sources = sources
        self.work = work
        self.grain_lut = grain_lut
        self.connectivity = connectivity

    def read(self, unit: Unit) -> dict[str, Any]:
        src = self.sources[unit.raster]
        array = src.open() if isinstance(src, ZarrSource) else src
        b = unit.block
        H, W = array.shape
        ya, yb, xa, xb = b.halo(1, H, W)
        padded = np.full((b.h + 2, b.w + 2), OUTSIDE, np.int16)
        padded[ya - b.y0 + 1 : yb - b.y0 + 1, xa - b.x0 + 1 : xb - b.x0 + 1] = np.asarray(array[ya:yb, xa:xb])
        return {"padded": padded}

    def compute(self, unit: Unit, data: dict[str, Any]) -> dict[str, Any]:
        r = measure_block(data["padded"], unit.block.y0, unit.block.x0, self.grain_lut, self.connectivity)
        return {"result": pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL)}

    def write(self, unit: Unit, result: dict[str, Any]) -> dict[str, Any]:
        atomic_write_bytes(block_result_path(self.work, unit), bytes(result["result"]))
        return {}

    def size_bytes(self, unit: Unit) -> int:
        return (unit.block.h + 2) * (unit.block.w + 2) * 2


def block_result_path(work: str, unit: Unit) -> str:
    return fs.join(work, "blocks", unit.raster, f"{unit.block.key}.pkl")


def read_block_results(work: str, units: Sequence[Unit]) -> list[BlockResult]:
    """The persisted results of ``units``, in their order."""
    return [pickle.loads(fs.read_bytes(block_result_path(work, u))) for u in units]


def _boundary_pairs(a: np.ndarray, b: np.ndarray, diagonal: bool) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    yield a, b
    if diagonal:
        yield a[:-1], b[1:]
        yield a[1:], b[:-1]


def merge_blocks(
    results: Sequence[BlockResult], shape: tuple[int, int], block: tuple[int, int], connectivity: int = 2
) -> tuple[pd.DataFrame, Tally]:
    """Join block components into grains; returns the grain measures (pixel units) and the image tally."""
    H, W = shape
    by, bx = block
    nby, nbx = -(-H // by), -(-W // bx)
    counts = np.array([len(r.codes) for r in results], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    N = int(offsets[-1])
    grid = {(r.y0 // by, r.x0 // bx): (r, offsets[k]) for k, r in enumerate(results)}

    def gid(local: np.ndarray, off: int) -> np.ndarray:
        return np.where(local > 0, local.astype(np.int64) - 1 + off, -1)

    codes = np.concatenate([r.codes for r in results]) if N else np.zeros(0, np.uint8)
    src, dst = [], []
    diagonal = connectivity == 2
    for i in range(nby - 1):
        upper = np.concatenate([gid(grid[i, j][0].bottom, grid[i, j][1]) for j in range(nbx)])
        lower = np.concatenate([gid(grid[i + 1, j][0].top, grid[i + 1, j][1]) for j in range(nbx)])
        for a, b in _boundary_pairs(upper, lower, diagonal):
            src.append(a)
            dst.append(b)
    for j in range(nbx - 1):
        left = np.concatenate([gid(grid[i, j][0].right, grid[i, j][1]) for i in range(nby)])
        right = np.concatenate([gid(grid[i, j + 1][0].left, grid[i, j + 1][1]) for i in range(nby)])
        for a, b in _boundary_pairs(left, right, diagonal):
            src.append(a)
            dst.append(b)
    if src:
        s, d = np.concatenate(src), np.concatenate(dst)
        keep = (s >= 0) & (d >= 0)
        s, d = s[keep], d[keep]
        keep = codes[s] == codes[d]
        s, d = s[keep], d[keep]
    else:
        s = d = np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(s), np.int8), (s, d)), shape=(N, N))
    ng, grain_of = connected_components(graph, directed=False) if N else (0, np.zeros(0, np.int64))

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(r, name) for r in results]) if N else np.zeros(0)

    area = np.bincount(grain_of, weights=cat("area"), minlength=ng).astype(np.int64)
    sum_y = np.bincount(grain_of, weights=cat("sum_y"), minlength=ng)
    sum_x = np.bincount(grain_of, weights=cat("sum_x"), minlength=ng)
    n_axis = np.bincount(grain_of, weights=cat("n_axis"), minlength=ng)
    n_diag = np.bincount(grain_of, weights=cat("n_diag"), minlength=ng)
    touches = np.bincount(grain_of, weights=cat("touches_ore").astype(np.float64), minlength=ng) > 0
    bboxes = np.concatenate([r.bbox for r in results]) if N else np.zeros((0, 4), np.int64)
    bbox = np.empty((ng, 4), np.int64)
    bbox[:, :2] = np.iinfo(np.int64).max
    bbox[:, 2:] = np.iinfo(np.int64).min
    np.minimum.at(bbox[:, 0], grain_of, bboxes[:, 0])
    np.minimum.at(bbox[:, 1], grain_of, bboxes[:, 1])
    np.maximum.at(bbox[:, 2], grain_of, bboxes[:, 2])
    np.maximum.at(bbox[:, 3], grain_of, bboxes[:, 3])
    gcode = np.zeros(ng, np.uint8)
    gcode[grain_of] = codes

    feret_c = np.concatenate([r.feret for r in results]) if N else np.zeros((0, 2))
    members = np.bincount(grain_of, minlength=ng)
    feret = np.full((ng, 2), np.nan)
    single = members[grain_of] == 1
    feret[grain_of[single]] = feret_c[single]
    hulls = [h for r in results for h in r.hulls]
    todo = np.isnan(feret[:, 0])
    if todo.any():
        comp_order = np.argsort(grain_of, kind="stable")
        starts = np.searchsorted(grain_of[comp_order], np.arange(ng + 1))
        todo_ids = np.nonzero(todo)[0]
        merged = []
        for g in todo_ids:
            comps = comp_order[starts[g] : starts[g + 1]]
            merged.append(
                hulls[comps[0]]
                if len(comps) == 1
                else cv2.convexHull(np.concatenate([hulls[c] for c in comps]).reshape(-1, 1, 2)).reshape(-1, 2)
            )
        feret[todo_ids] = feret_batch(merged)

    tally = Tally()
    for r in results:
        tally += r.tally
    perim = CROFTON * (n_axis + n_diag * INV_SQRT2)
    df = pd.DataFrame(
        {
            "class_code": gcode,
            "area_px": area,
            "ecd_px": np.sqrt(4.0 * area / math.pi),
            "perimeter_px": perim,
            "feret_max_px": feret[:, 0],
            "feret_min_px": feret[:, 1],
            "centroid_y_px": sum_y / np.maximum(area, 1),
            "centroid_x_px": sum_x / np.maximum(area, 1),
            "bbox_y0": bbox[:, 0],
            "bbox_x0": bbox[:, 1],
            "bbox_y1": bbox[:, 2],
            "bbox_x1": bbox[:, 3],
            "touches_edge": (bbox[:, 0] == 0) | (bbox[:, 1] == 0) | (bbox[:, 2] == H) | (bbox[:, 3] == W),
            "touches_ore": touches,
        }
    )
    df = df.sort_values(["bbox_y0", "bbox_x0", "class_code"], kind="stable").reset_index(drop=True)
    return df, tally


def grain_lut_for(codes: Iterable[int], non_grain: Iterable[int]) -> np.ndarray:
    """(256,) bool: the class codes measured as grains (all of ``codes`` except ``non_grain``)."""
    lut = np.zeros(256, bool)
    lut[list(codes)] = True
    lut[list(non_grain)] = False
    return lut


def measure_labels(
    source: Any, shape: tuple[int, int], block: tuple[int, int], grain_lut: np.ndarray, connectivity: int = 2
) -> tuple[pd.DataFrame, Tally]:
    """Grain measures (pixel units) and tally of a whole (y, x) label image read block by block, in
    this process (the raster runner's serial executor; block results pass through a temporary folder).

    Args:
        source: a numpy array, anything sliceable like one, or a :class:`ZarrSource`.
        shape: (H, W) of the label image.
        block: block shape; use the zarr shard shape so each block reads whole shards.
        grain_lut: which codes are grains (see :func:`grain_lut_for`).
        connectivity: 2 (8-connected grains) or 1 (4-connected).
    """
    units = units_of("labels", block_grid(*shape, block))
    with tempfile.TemporaryDirectory(prefix="lode-grains-") as work:
        run_stage(
            GrainStage({"labels": source}, work, grain_lut, connectivity), units, None, RunOptions(executor="serial")
        )
        return merge_blocks(read_block_results(work, units), shape, block, connectivity)


def finish_grain_table(
    df: pd.DataFrame, section: str, names: dict[int, str], pixel_size_um: float | None
) -> pd.DataFrame:
    """Add section, ids, class names and µm columns in the order of ``GRAINS_SCHEMA``."""
    from schemas.tables import GRAINS_SCHEMA

    out = df.copy()
    out.insert(0, "section", section)
    out.insert(1, "grain_id", np.arange(1, len(out) + 1, dtype=np.int64))
    out.insert(3, "class_name", [names.get(int(c), str(int(c))) for c in out["class_code"]])
    px = pixel_size_um
    nan = float("nan")
    out["area_um2"] = out["area_px"] * px * px if px else nan
    for col in ("ecd", "perimeter", "feret_max", "feret_min"):
        out[f"{col}_um"] = out[f"{col}_px"] * px if px else nan
    out["pixel_size_um"] = px if px else nan
    out = out[[f.name for f in GRAINS_SCHEMA]]
    return out
