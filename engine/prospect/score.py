"""Prospectivity maps by blocked sliding window, written to zarr (and GeoTIFF).

**The score.** For the MAE two components, each a map:

- ``recon_error``: the mean squared error over the *measured* channels of each
  cell when its patch group is masked and predicted from the surrounding visible
  patches (two complementary checkerboard masks, so every cell is predicted
  exactly once). It flags where the sources depart from what their spatial
  context predicts. One-hot geology is input context but not scored: its error
  marks unit contacts, whose course no context can predict, not mineralisation
  (on the training deposits of the earlier coincident-anomaly regions, all channels gave AUC 0.956,
  measured channels 0.969; every baseline gets the same rule).
- ``latent_distance``: the Mahalanobis distance of the cell's token latent (all
  tokens visible) from a Gaussian fitted to training latents (Ledoit-Wolf
  shrinkage). It flags token *combinations* rare in the region, even those the
  decoder can reproduce.

Both are blended across overlapping windows (optionally smoothed with a Gaussian
of ``sigma`` cells; default 0). The prospectivity is a weighted sum of the
components, each standardised by its own median and inter-quartile range over the
region's valid cells: ``z(recon_error) + w * z(latent_distance)`` with ``w = 0`` by
default, i.e. the reconstruction error at the scale of the masked patch group
(16 x 16 cells for the default 8-cell patches, the size of a footprint's core, so
the core must be predicted from its zoned surroundings). The choice was made on the
*training* deposits of the benchmark regions (held-out deposits never choose it;
``benchmarks.prospect`` picks the MAE variant by mean training-deposit AUC): recon
error 0.944, recon + 0.25 latent 0.943, latent distance alone 0.830, and Gaussian
smoothing at 4 / 8 cells lowered every method (recon 0.910 / 0.856). The latent
Gaussian on 64-d token latents is broad and a footprint is a few tokens among many
ordinary ones, so the latent distance stays a component map for inspection only.
Baselines give one component each, which is their prospectivity.

**Shifted lattices** (``shifts``, default 2 in the job). With one window lattice the
masked patch groups sit on a fixed 16-cell grid: a deposit whose core straddles group
corners has most of it visible in unmasked neighbours and is reconstructed well.
``shifts = 2`` averages the four lattices offset by (0 | 8, 0 | 8) cells, so every
cell is also predicted with its group centred within 4 cells of it. Chosen on the
validation regions (seeds 4 and 5, all 29 deposits; the held-out seeds 1-3 never
chose it): one lattice AUC 0.915 and 18 of 29 deposits in the top 10 % of
area (0.62), four lattices AUC 0.919 and 21 of 29 (0.72); Gaussian smoothing (1, 2,
4, 8 cells), median filters (3-17 cells), grey opening and leaving each cell's
largest channel error out (``drop_top`` 1 or 2, region 4 only) did not add to it (details in the
README). It costs four times the scoring time, no memory.

**Blocks.** The map runs on the raster runner (:mod:`engine.raster`) as a model stage
(:class:`ScoreStage`): a task reads one output block plus the halo of its lattice windows
(and the smoothing halo) from the stack; the scorer's actor (on the device it picked in its
own process) runs the windows of every lattice (:func:`~engine.raster.grid.lattice_starts`,
stride = window / 2) and blends them with the ``sin2`` kernel (weights that sum to one;
``flat`` when windows do not overlap); a task writes the block's component maps as whole
zarr chunks (chunk = block). So the result equals a global sliding window while memory is
bounded by the block. Then a blockwise pass standardises the components into
``prospectivity``. Invalid cells are NaN in every output and are never ranked.

**Resume.** The map store is written in place, with the runner's per-block record under
``_run/`` inside it: a killed map resumes where it stopped. The store's ``complete``
attribute is set last, after every block and the standardisation are written; readers
(:func:`read_score`, :func:`write_geotiff`) refuse a store without it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import zarr

from engine.errors import LodeInputError
from engine.io.layout import array_at
from engine.io.manifest import RunManifest
from engine.prospect.checkpoint import read_card
from engine.prospect.stack import open_stack
from engine.raster.blend import blend_weights
from engine.raster.grid import Block, block_grid, lattice_offsets, lattice_starts
from engine.raster.runner import RunOptions, run_stage
from engine.raster.stage import BlockStage, Unit, release_heap, units_of

if TYPE_CHECKING:
    import torch

    from engine.nets.mae import ConvAutoencoder, ProspectMAE

SCORE = "prospectivity"
RUN = "_run"
RASTER = "map"
Offsets = tuple[tuple[int, int], ...]


class WindowScorer(Protocol):
    """Scores windows; ``offsets`` are its window lattices, ``weights`` its components' weights in
    the prospectivity (default 1). Built on the CPU; :meth:`to` readies it on a device (in the
    process that runs it)."""

    window: int
    stride: int
    components: tuple[str, ...]

    def to(self, device: str) -> WindowScorer:
        """A scorer ready on ``device``: this one moved there, or the one this describes, built there."""

    def __call__(self, x: np.ndarray, valid: np.ndarray, /) -> np.ndarray:
        """(N, C, W, W) filled inputs and (N, W, W) validity -> (N, K, W, W) component maps."""


def channel_error(sq: torch.Tensor | np.ndarray, dim: int, drop_top: int = 0):
    """Mean squared error over channels (axis ``dim``) leaving out each cell's ``drop_top``
    largest channel errors, so that an anomaly in a single source weighs less than a
    departure shared by several."""
    if drop_top <= 0:
        return sq.mean(axis=dim) if isinstance(sq, np.ndarray) else sq.mean(dim)
    n = sq.shape[dim]
    if drop_top >= n:
        raise ValueError(f"drop_top {drop_top} must be below the {n} scored channels")
    if isinstance(sq, np.ndarray):
        return np.sort(sq, axis=dim).take(range(n - drop_top), axis=dim).mean(axis=dim)
    import torch

    return torch.sort(sq, dim=dim).values.narrow(dim, 0, n - drop_top).mean(dim)


def _geometry(kind: str, config: dict, shifts: int, shift_step: int = 8) -> dict[str, Any]:
    """Window, stride (half a window) and lattice offsets of a mae / cae model's scorer: the MAE's
    lattices are shifted by one patch, the conv AE's by ``shift_step`` cells."""
    window = int(config["window"])
    step = int(config["patch"]) if kind == "mae" else shift_step
    return {"window": window, "stride": window // 2, "offsets": lattice_offsets(shifts, step)}


def _batch(device: str, batch: int | None) -> int:
    """Windows per model call: 8 on the CPU (a batch's activations are most of a CPU actor's working
    memory, and a window's result does not depend on its batch), 128 on a GPU, unless given."""
    return batch or (8 if device == "cpu" else 128)


def _batched(fn, x: np.ndarray, v: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([fn(x[i : i + batch], v[i : i + batch]) for i in range(0, len(x), batch)])


class MAEScorer:
    components: tuple[str, ...] = ("recon_error", "latent_distance")

    def __init__(
        self,
        model: ProspectMAE,
        latent: dict[str, np.ndarray],
        device: str = "cpu",
        batch: int | None = None,
        latent_weight: float = 0.0,
        score_channels: list[int] | None = None,
        shifts: int = 1,
        drop_top: int = 0,
    ):
        g = _geometry("mae", {"window": model.window, "patch": model.patch}, shifts)
        self.window, self.stride, self.offsets, self.fixed_batch = g["window"], g["stride"], g["offsets"], batch
        self.drop_top = drop_top
        self.weights = {"recon_error": 1.0, "latent_distance": latent_weight}
        self.score_channels = list(score_channels) if score_channels is not None else list(range(model.channels))
        self.model, self.latent = model.eval(), latent
        self.to(device)

    def to(self, device: str) -> MAEScorer:
        import torch

        self.device, self.batch = device, _batch(device, self.fixed_batch)
        self.model = self.model.to(device)
        self.mean = torch.as_tensor(self.latent["mean"], device=device)
        self.precision = torch.as_tensor(self.latent["precision"], device=device)
        self.masks = self.model.scoring_masks().to(device)
        return self

    def _run(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        import torch

        m = self.model
        with torch.no_grad():
            xt, vt = torch.from_numpy(x).to(self.device), torch.from_numpy(v).to(self.device)
            n = xt.shape[0]
            err = torch.zeros(n, m.window, m.window, device=self.device)
            for mask in self.masks:
                tm = mask[None].expand(n, -1)
                pred = m(xt, vt, tm)
                sq = (pred - xt)[:, self.score_channels] ** 2
                err += channel_error(sq, 1, self.drop_top) * m._pixel_mask(tm)[:, 0]
            lat = m.encode(xt, vt) - self.mean
            d = torch.sqrt(torch.einsum("ntd,de,nte->nt", lat, self.precision, lat).clamp_min(0))
            d = d.reshape(n, 1, m.grid, m.grid)
            dist = torch.nn.functional.interpolate(d, scale_factor=m.patch, mode="nearest")[:, 0]
            return torch.stack([err, dist], dim=1).cpu().numpy()

    def __call__(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        return _batched(self._run, x, v, self.batch)


class CAEScorer:
    components: tuple[str, ...] = ("cae_error",)

    def __init__(
        self,
        model: ConvAutoencoder,
        device: str = "cpu",
        batch: int | None = None,
        score_channels: list[int] | None = None,
        shifts: int = 1,
        shift_step: int = 8,
        drop_top: int = 0,
    ):
        g = _geometry("cae", {"window": model.window}, shifts, shift_step)
        self.window, self.stride, self.offsets, self.fixed_batch = g["window"], g["stride"], g["offsets"], batch
        self.drop_top = drop_top
        self.score_channels = list(score_channels) if score_channels is not None else list(range(model.channels))
        self.model = model.eval()
        self.to(device)

    def to(self, device: str) -> CAEScorer:
        self.device, self.batch = device, _batch(device, self.fixed_batch)
        self.model = self.model.to(device)
        return self

    def _run(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            xt, vt = torch.from_numpy(x).to(self.device), torch.from_numpy(v).to(self.device)
            err = channel_error((self.model(xt, vt) - xt)[:, self.score_channels] ** 2, 1, self.drop_top)
            return err[:, None].cpu().numpy()

    def __call__(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        return _batched(self._run, x, v, self.batch)


class CellScorer:
    """Adapts a per-cell scorer (``.cells(X) -> scores``) to windows without overlap."""

    offsets: Offsets = ((0, 0),)

    def __init__(self, scorer, window: int = 64):
        self.scorer, self.window, self.stride, self.components = scorer, window, window, scorer.components

    def to(self, device: str) -> CellScorer:
        return self

    def __call__(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], 1) + x.shape[2:], dtype=np.float32)
        sel = v > 0
        if sel.any():
            feats = np.moveaxis(x, 1, -1)[sel]
            out[:, 0][sel] = self.scorer.cells(feats)
        return out


@dataclass(frozen=True)
class CheckpointScorer:
    """A MAE or conv-AE scorer described by its checkpoint: small to ship to workers, built by
    :meth:`to` in the process that runs it (the driver never imports torch for it). ``open``
    checks the checkpoint against the stack."""

    path: str
    kind: str
    score_channels: tuple[int, ...]
    shifts: int
    drop_top: int
    window: int
    stride: int
    offsets: Offsets

    @property
    def components(self) -> tuple[str, ...]:
        return MAEScorer.components if self.kind == "mae" else CAEScorer.components

    @property
    def weights(self) -> dict[str, float]:
        return {n: 1.0 if i == 0 else 0.0 for i, n in enumerate(self.components)}

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What a resumed map must share with the run it resumes: the checkpoint file as it is now."""
        st = os.stat(self.path)
        return {
            "checkpoint": self.path,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "kind": self.kind,
            "score_channels": list(self.score_channels),
            "drop_top": self.drop_top,
        }

    @classmethod
    def open(
        cls,
        path: str | Path,
        kind: str,
        channels: list[str],
        score_channels: list[int],
        shifts: int = 2,
        drop_top: int = 0,
    ) -> CheckpointScorer:
        if not Path(path).exists():
            raise LodeInputError(path, "model checkpoint not found")
        card = read_card(path)
        if card.kind != kind:
            raise LodeInputError(path, f"checkpoint is a {card.kind} model, not {kind}")
        if card.channels != channels:
            raise LodeInputError(path, "checkpoint channels differ from the stack's")
        return cls(
            str(Path(path).resolve()),
            kind,
            tuple(score_channels),
            shifts,
            drop_top,
            **_geometry(kind, card.config, shifts),
        )

    def to(self, device: str) -> WindowScorer:
        from engine.nets.mae import ProspectMAE
        from engine.prospect.checkpoint import load_checkpoint

        net, _, latent = load_checkpoint(self.path)
        channels, shifts, drop = list(self.score_channels), self.shifts, self.drop_top
        if isinstance(net, ProspectMAE):
            return MAEScorer(net, latent, device, score_channels=channels, shifts=shifts, drop_top=drop)
        return CAEScorer(net, device, score_channels=channels, shifts=shifts, drop_top=drop)


def smooth_valid(values: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over valid cells only (normalised convolution); invalid cells get NaN."""
    from scipy import ndimage

    vf = valid.astype(np.float32)
    norm = ndimage.gaussian_filter(vf, sigma, mode="constant")
    out = ndimage.gaussian_filter(np.where(valid, values, 0).astype(np.float32), sigma, mode="constant") / np.maximum(
        norm, 1e-6
    )
    out[~valid] = np.nan
    return out


class ScoreStage(BlockStage):
    """Prospectivity scoring as a model block stage: read a block plus its lattice (and
    smoothing) halo → score every window of every lattice on the actor, ``sin2`` blend
    (``flat`` when stride == window), smoothing → write the block's component chunks.

    ``max_windows`` windows are cut per scorer call: a multiple of the model scorers' batch (8 or 128),
    so their batches are those of one pass over the block, and 128 windows of (C, 64, 64) stay
    at about 30 MB.
    """

    name = "prospect"
    model = True

    def __init__(self, stack: str, out: str, scorer: WindowScorer, sigma: float = 0.0, max_windows: int = 128):
        self.stack, self.out, self.scorer, self.sigma, self.max_windows = stack, out, scorer, sigma, max_windows
        self.ready: WindowScorer | None = None
        self.threads: int | None = None

    def region(self, b: Block) -> tuple[int, int, list[tuple[list[int], list[int]]], int, int]:
        """Read origin ``(ry0, rx0)``, each lattice's window starts ``(ys, xs)`` and the read size ``(rh, rw)``."""
        w, s = self.scorer.window, self.scorer.stride
        halo = math.ceil(3 * self.sigma) if self.sigma > 0 else 0
        ey0, ey1, ex0, ex1 = b.y0 - halo, b.y0 + b.h + halo, b.x0 - halo, b.x0 + b.w + halo
        lattices = [
            (lattice_starts(ey0, ey1, w, s, dy), lattice_starts(ex0, ex1, w, s, dx))
            for dy, dx in getattr(self.scorer, "offsets", ((0, 0),))
        ]
        ry0, rx0 = min(ys[0] for ys, _ in lattices), min(xs[0] for _, xs in lattices)
        ry1, rx1 = max(ys[-1] for ys, _ in lattices) + w, max(xs[-1] for _, xs in lattices) + w
        return ry0, rx0, lattices, ry1 - ry0, rx1 - rx0

    def size_bytes(self, unit: Unit) -> int:
        _, _, _, rh, rw = self.region(unit.block)
        return 4 * (len(open_stack(self.stack).channels) + 1) * rh * rw

    def read(self, unit: Unit) -> dict[str, Any]:
        """The stack ``(C, rh, rw)`` (NaN filled with 0) and validity ``(rh, rw)`` of the block's windows."""
        ry0, rx0, _, rh, rw = self.region(unit.block)
        data, valid = open_stack(self.stack).read(ry0, ry0 + rh, rx0, rx0 + rw)
        return {"data": np.nan_to_num(data, nan=0.0), "valid": valid}

    def setup(self, device: str) -> None:
        if self.ready is not None:
            return
        if device == "cpu":
            import torch

            self.threads = os.cpu_count() or 1
            torch.set_num_threads(self.threads)
        self.ready = self.scorer.to(device)

    def compute(self, unit: Unit, data: dict[str, Any]) -> dict[str, Any]:
        """Component maps ``(K, h, w)`` of the block, equal to a global sliding window; the lattices
        of a scorer with several ``offsets`` are averaged (each one's weights sum to one at every cell)."""
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        assert self.ready is not None
        b, w = unit.block, self.scorer.window
        ry0, rx0, lattices, _, _ = self.region(b)
        x, valid = data["data"], np.asarray(data["valid"], dtype=bool)
        vf = valid.astype(np.float32)
        k = len(self.scorer.components)
        acc = np.zeros((k,) + valid.shape, dtype=np.float32)
        wsum = np.zeros(valid.shape, dtype=np.float32)
        wt = blend_weights(w, "flat" if self.scorer.stride == w else "sin2")
        origins = [(a - ry0, c - rx0) for ys, xs in lattices for a in ys for c in xs]
        origins = [(a, c) for a, c in origins if valid[a : a + w, c : c + w].any()]
        for i in range(0, len(origins), self.max_windows):
            chunk = origins[i : i + self.max_windows]
            xs = np.stack([x[:, a : a + w, c : c + w] for a, c in chunk])
            vs = np.stack([vf[a : a + w, c : c + w] for a, c in chunk])
            comps = self.ready(xs, vs)
            del xs, vs
            release_heap()
            for (a, c), comp in zip(chunk, comps):
                acc[:, a : a + w, c : c + w] += comp * wt
                wsum[a : a + w, c : c + w] += wt
        comp = acc / np.maximum(wsum, 1e-6)
        if self.sigma > 0:
            for i in range(k):
                comp[i] = smooth_valid(comp[i], valid, self.sigma)
        cy, cx = b.y0 - ry0, b.x0 - rx0
        out = comp[:, cy : cy + b.h, cx : cx + b.w]
        out[:, ~valid[cy : cy + b.h, cx : cx + b.w]] = np.nan
        return {"maps": np.ascontiguousarray(out), "windows": len(origins)}

    def write(self, unit: Unit, result: dict[str, Any]) -> dict[str, Any]:
        b = unit.block
        root = zarr.open_group(self.out, mode="r+", use_consolidated=False)
        for name, comp in zip(self.scorer.components, np.asarray(result["maps"])):
            array_at(root, name)[b.y0 : b.y0 + b.h, b.x0 : b.x0 + b.w] = comp
        return {"windows": int(result["windows"])}


def _robust(arr, max_samples: int = 2_000_000) -> tuple[float, float]:
    h, w = arr.shape
    step = max(1, math.ceil(math.sqrt(h * w / max_samples)))
    v = np.asarray(arr[::step, ::step]) if step > 1 else np.asarray(arr[:, :])
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return float(med), float(q3 - q1) if q3 > q1 else float(v.std() or 1.0)


def _standardise(
    root, names: list[str], weights: dict[str, float], blocks: list[Block]
) -> dict[str, tuple[float, float]]:
    """Write ``prospectivity`` = sum of weighted (component - median) / IQR, block by block."""
    stats = {n: _robust(root[n]) for n in names}
    for b in blocks:
        sl = (slice(b.y0, b.y0 + b.h), slice(b.x0, b.x0 + b.w))
        total = np.zeros((b.h, b.w), np.float32)
        for n in names:
            med, iqr = stats[n]
            total += np.float32(weights[n]) * (root[n][sl] - np.float32(med)) / np.float32(iqr)
        root[SCORE][sl] = total
    return stats


def _prepare(out: Path, stack, names: list[str], block: int, fingerprint: dict, attrs: dict) -> tuple[RunManifest, Any]:
    """Open (resume) or create the map store with its run record; a store from another run is replaced."""
    manifest = RunManifest(str(out / RUN))
    prev = manifest.read()
    if out.exists() and (prev is None or prev.get("fingerprint") != json.loads(json.dumps(fingerprint))):
        shutil.rmtree(out)
    manifest.check_writable()
    fresh = manifest.begin("prospect-map", attrs, fingerprint)
    root = zarr.open_group(out, mode="a", use_consolidated=False)
    root.attrs["complete"] = False
    if fresh:
        h, w = stack.shape
        g = stack.grid
        root.create_array("northing", data=g.northing, dimension_names=("northing",), overwrite=True)
        root.create_array("easting", data=g.easting, dimension_names=("easting",), overwrite=True)
        for n in names + [SCORE]:
            root.create_array(
                n,
                shape=(h, w),
                chunks=(min(block, h), min(block, w)),
                dtype="float32",
                fill_value=np.nan,
                dimension_names=("northing", "easting"),
                overwrite=True,
            )
        root.attrs.update(
            {
                "crs": g.crs,
                "grid": g.to_dict(),
                "transform": [g.west, g.cell_size, g.north],
                "components": names,
                "complete": False,
                **attrs,
            }
        )
    return manifest, root


def score_map(
    stack_path: str | Path,
    scorer: WindowScorer,
    out: str | Path,
    block: int = 512,
    sigma: float = 0.0,
    attrs: dict | None = None,
    max_blocks: int | None = None,
    options: RunOptions | None = None,
) -> Path:
    """Write component maps and ``prospectivity`` (northing, easting) to zarr store ``out``, one
    chunk per block, resuming a killed run of the same map (same stack, scorer geometry and
    checkpoint file, ``block``, ``sigma`` and ``attrs``; an in-memory scorer is trusted to be the
    same one); a store of another map is replaced. ``options`` choose the executor (default: in
    process; with ``RunOptions(executor="ray")`` an embedded Ray is started when none is connected,
    and shut down again once the blocks are mapped).

    ``max_blocks`` scores only the first pending blocks (row-major) and leaves the rest NaN,
    for measuring time and memory per block on large regions; the store is then left
    ``complete: False`` (a rerun finishes it) and prospectivity is standardised over the
    blocks done so far.
    """
    t0 = time.perf_counter()
    stack = open_stack(stack_path)
    out = Path(out).absolute()
    names = list(scorer.components)
    weights = {n: float(getattr(scorer, "weights", {}).get(n, 1.0)) for n in names}
    attrs = {"sigma": sigma, "block": block, **(attrs or {})}
    fingerprint = {
        "stack": str(Path(stack_path).resolve()),
        "scorer": getattr(scorer, "fingerprint", type(scorer).__name__),
        "window": scorer.window,
        "stride": scorer.stride,
        "offsets": getattr(scorer, "offsets", ((0, 0),)),
        "components": names,
        "weights": weights,
        **attrs,
    }
    manifest, root = _prepare(out, stack, names, block, fingerprint, attrs)
    blocks = block_grid(*stack.shape, block)
    units = units_of(RASTER, blocks)
    stage = ScoreStage(str(Path(stack_path).resolve()), str(out), scorer, sigma)
    opts = options or RunOptions(executor="serial")
    started = False
    if opts.executor == "ray":
        import ray

        from engine.runtime import init_ray

        started = not ray.is_initialized()
        init_ray()
    try:
        run = run_stage(stage, units, manifest, replace(opts, max_units=max_blocks))
    finally:
        if started:
            ray.shutdown()  # standardising (and exporting) need no Ray: its processes go first
    if run.failed:
        raise LodeInputError(stack_path, f"map blocks failed: {run.failed}")
    done = manifest.done_keys()
    finished = [u.block for u in units if u.key in done]
    t_map = time.perf_counter()
    stats = _standardise(root, names, weights, finished)
    complete = len(finished) == len(units)
    manifest.finish(
        {"map_s": t_map - t0, "standardise_s": time.perf_counter() - t_map},
        expected=[u.key for u in units],
        skipped=run.skipped,
    )
    standardisation = {n: {"median": m, "iqr": q, "weight": weights[n]} for n, (m, q) in stats.items()}
    root.attrs.update(
        {
            "standardisation": standardisation,
            "blocks_done": len(finished),
            "blocks_total": len(units),
            "device": run.device,
            "complete": complete,
        }
    )
    zarr.consolidate_metadata(out)
    return out


def _open_map(path: str | Path, partial: bool):
    path = Path(path)
    if not path.exists():
        raise LodeInputError(path, "prospectivity map not found")
    try:
        root = zarr.open_group(path, mode="r")
    except Exception as exc:
        raise LodeInputError(path, f"not a prospectivity map: {exc}") from exc
    if not partial and root.attrs.get("complete") is not True:
        raise LodeInputError(
            path,
            f"partial map ({root.attrs.get('blocks_done', 0)} of "
            f"{root.attrs.get('blocks_total', '?')} blocks): rerun the map to finish it",
        )
    return root


def read_score(path: str | Path, name: str = SCORE, partial: bool = False) -> np.ndarray:
    """One map of a score store; a store its run has not completed is refused unless ``partial``."""
    root = _open_map(path, partial)
    try:
        return np.asarray(root[name][:, :])
    except Exception as exc:
        raise LodeInputError(path, f"no {name!r} map in store: {exc}") from exc


def write_geotiff(map_path: str | Path, out: str | Path, name: str = SCORE, block: int = 512) -> Path:
    """Copy one map of a (complete) score store to a cloud-optimised GeoTIFF with the map's CRS and
    transform, block by block."""
    from rasterio.transform import from_origin

    from engine.export.survey import write_cog

    root = _open_map(map_path, partial=False)
    g = root.attrs["grid"]
    arr = array_at(root, name)
    transform = from_origin(g["west"], g["north"], g["cell_size"], g["cell_size"])
    return write_cog(out, arr.shape, lambda y0, y1, x0, x1: np.asarray(arr[y0:y1, x0:x1]), g["crs"], transform, block)
