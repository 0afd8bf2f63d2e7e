"""Stitch one section: correct (an actor), register pairs (Ray tasks), solve, gains, seams, then render
the panorama's shards on the raster runner (:class:`~engine.stitch.render.RenderStage`).

Preparing a section (:func:`prepare_section`: :func:`correct_section`, which needs the frame
corrector, then :func:`plan_section`, which needs it only when the lens refined over the section's
overlaps changes, so a job can let the actor go once its last section's frames are corrected) writes
its corrected frames and its render plan
to the section's work folder beside the store and creates the hidden ``.<section>.partial``
group; rendering records every finished shard in the run manifest of that work folder, so a
killed run resumes at its first unfinished shard from the same plan; :func:`finish_section`
renames the partial group into place once every shard is written. The stitch report (frames
placed, per-edge residuals, RMS, gains, flagged frames, the pixel size and where it came from)
goes into the image group's ``attrs["lode"]["stitch"]`` and is returned.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import ray

from engine.calibrate.lens import LensModel
from engine.errors import LodeInputError, input_error_of
from engine.io import fs
from engine.io.atomic import atomic_write_bytes, publish
from engine.io.images import image_header
from engine.io.layout import SEAM_LABELS, SEAM_REFINED, array_at, attrs_of, group_at
from engine.io.manifest import RunManifest
from engine.io.ome import PyramidLayout, create_image, open_store
from engine.raster.runner import RunOptions, StageRun, run_stage
from engine.raster.stage import release_heap
from engine.stitch.align import AlignOptions, solve
from engine.stitch.bundle import refine_section_lens
from engine.stitch.confidence import Confidence, predict_errors
from engine.stitch.exposure import overlap_means, solve_gains
from engine.stitch.frames import Correction, FrameCorrector, SectionInput, read_section
from engine.stitch.refine import PairFrame, Strip, paste, refine_pair, seam_pairs, seam_partners
from engine.stitch.register import (
    MODELS,
    Edge,
    Model,
    RegisterOptions,
    apply,
    compose,
    detect,
    invert,
    local_similarity,
    match,
    register_pair,
    to_grey,
    translation,
)
from engine.stitch.render import BLENDS, Blend, RenderPlan, RenderStage, frame_box, frame_path, load_frame
from engine.stitch.seams import seam_labels
from engine.stitch.stage import fit_stage, section_pixel_size, stage_neighbours, stage_pixels
from engine.stitch.warp import warp

log = logging.getLogger(__name__)

RENDER_THREADS = 2
"""Shards a render actor on the CPU computes side by side (numpy, OpenCV and torch leave the GIL)."""


@dataclass(frozen=True)
class StitchOptions:
    """``model``: the frames' transform, ``similarity`` or ``homography`` (stages that tilt); it sets
    ``register.model`` and ``align.model``. The lens is not refined with ``homography``
    (:func:`engine.stitch.bundle.refine_lens` says so in the report's ``lens.reason``).
    ``seam_refine``: cut the seams again at full resolution near the low-res seam
    (:mod:`engine.stitch.refine`; the multiband blend follows it, ``feather`` does not).
    ``pixel_size_um``: the frames' pixel size, written into the panorama's NGFF scale (axis unit
    ``micrometer``), and ``pixel_size_source``, where it came from (``calibration``: the collection's
    ``pixel_size.json``; ``option``: the caller). ``None`` takes the pixel size a section's stage
    positions in micrometres give (:mod:`engine.stitch.stage`), else leaves the panorama in pixels."""

    register: RegisterOptions = field(default_factory=RegisterOptions)
    align: AlignOptions = field(default_factory=AlignOptions)
    min_overlap: float = 0.1
    seam_megapixels: float = 1.0
    seam_refine: bool = True
    blend_sigma_low: float = 1.5
    shard: int = 2048
    levels: int = 3
    coarse_px: int = 800
    flag_residual_px: float = 1.0
    flag_error_px: float = 0.3
    blank_std: float = 3.0
    refine_lens: bool = True
    blend: Blend = "multiband"
    blend_levels: int | None = None
    model: Model = "similarity"
    pixel_size_um: float | None = None
    pixel_size_source: Literal["calibration", "option"] = "option"

    def __post_init__(self) -> None:
        if self.pixel_size_um is not None and not (np.isfinite(self.pixel_size_um) and self.pixel_size_um > 0):
            raise ValueError(f"pixel_size_um must be a positive number of micrometres, not {self.pixel_size_um!r}")
        if self.pixel_size_source not in ("calibration", "option"):
            raise ValueError(f"pixel_size_source must be calibration or option, not {self.pixel_size_source!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, not {self.model!r}")
        object.__setattr__(self, "register", replace(self.register, model=self.model))
        object.__setattr__(self, "align", replace(self.align, model=self.model))
        if self.blend not in BLENDS:
            raise ValueError(f"blend must be one of {', '.join(BLENDS)}, not {self.blend!r}")
        if self.blend_levels is not None and not 1 <= self.blend_levels <= 10:
            raise ValueError(f"blend_levels must be None (from the frame size) or 1 to 10, not {self.blend_levels!r}")


def _corners(hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def _similarity(M: np.ndarray, hw: tuple[int, int]) -> tuple[float, float]:
    """Scale and rotation (degrees) of ``M`` (of a homography: of its closest similarity over the frame)."""
    S = local_similarity(M, _corners(hw))
    return float(np.hypot(S[0, 0], S[1, 0])), float(np.degrees(np.arctan2(S[1, 0], S[0, 0])))


def frame_corrector(resources: dict[str, float] | None = None) -> ray.actor.ActorHandle:
    """The actor that corrects captures on their way in (:class:`~engine.stitch.frames.FrameCorrector`):
    on a GPU when the cluster has one, else on the CPU with torch's threads over the node's cores; the
    actor picks its device in its own process. One per job: sections share it."""
    gpus = (resources if resources is not None else ray.cluster_resources()).get("GPU", 0) > 0
    actor: Any = ray.remote(_Corrector)
    opts = dict(num_cpus=0, num_gpus=1 if gpus else 0, max_concurrency=2, **fs.ray_remote_args())
    return actor.options(**opts).remote()


class _Corrector(FrameCorrector):
    def __init__(self) -> None:
        import os

        from engine.raster.runner import local_device

        device = local_device(bool(ray.get_gpu_ids()))
        super().__init__(device, None if device != "cpu" else os.cpu_count())


def _cached(work: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Corrected frame ``k`` ``(h, w, 3)`` and its valid mask ``(h, w)`` from the section's work folder."""
    return load_frame(frame_path(work, k, "image")), load_frame(frame_path(work, k, "valid"))


@ray.remote
def _coarse_features(work: str, k: int, scale: float, max_features: int):
    img, valid = _cached(work, k)
    g = cv2.resize(to_grey(img), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    v = cv2.resize(valid, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_NEAREST)
    pts, desc = detect(g, v, None, max_features)
    del img, valid
    release_heap()
    return (pts + 0.5) / scale - 0.5, desc


@ray.remote
def _refine_task(
    work: str, seams: tuple[np.ndarray, np.ndarray], scale: float, placed: list[tuple[int, Any, Any]], shape
) -> Strip:
    """The refined seam strip of the pair ``placed`` (each frame's index, transform and gain) from
    ``seams`` (the low-res labels and their :func:`seam_partners`); the corrected frames are read
    from ``work``."""
    fa, fb = (PairFrame(k, *_cached(work, k), M, gain) for k, M, gain in placed)
    strip = refine_pair(*seams, scale, fa, fb, shape)
    del fa, fb
    release_heap()
    return strip


def _refine_seams(plan: RenderPlan, labels: np.ndarray) -> int:
    """Cut every low-res seam of ``labels`` again at full resolution (a Ray task per pair of frames)
    into the plan's ``SEAM_REFINED`` array, strip by strip (one Ray task's strip in memory here at a
    time, in pair order); the number of pairs."""
    target = array_at(open_store(plan.store, mode="r+"), f"{plan.group}/{SEAM_REFINED}")
    partners = seam_partners(labels)
    ref = ray.put((labels, partners))
    pending = [
        _refine_task.remote(plan.work, ref, plan.scale, [(k, plan.mats[k], plan.gains[k]) for k in pair], plan.shape)
        for pair in seam_pairs(labels, partners)
    ]
    n = len(pending)
    while pending:
        paste(target, ray.get(pending.pop(0)))
    return n


@ray.remote
def _register_task(i: int, j: int, work: str, prior, opts: RegisterOptions) -> Edge:
    cv2.setRNGSeed(i * 7919 + j)  # RANSAC draws the same samples in whichever worker runs the pair
    edge = register_pair(i, j, *_cached(work, i), *_cached(work, j), prior, opts)
    release_heap()
    return edge


def _nominal_pairs(xy: np.ndarray, hw: tuple[int, int], min_overlap: float) -> list[tuple[int, int, np.ndarray]]:
    h, w = hw
    out = []
    for i in range(len(xy)):
        for j in range(i + 1, len(xy)):
            dx, dy = xy[j] - xy[i]
            area = max(0.0, w - abs(dx)) * max(0.0, h - abs(dy))
            if area >= min_overlap * h * w:
                out.append((i, j, translation(dx, dy)))
    return out


def _coarse_pairs(
    work: str, n: int, hw, opts: StitchOptions, candidates: list[tuple[int, int]] | None = None
) -> list[tuple[int, int, np.ndarray]]:
    """Overlap search on downscaled features over the ``candidates`` pairs ``(i, j)``, ``i < j``: every
    pair when no positions are given, each frame with its nearest stage positions when they are in
    micrometres (:mod:`engine.stitch.stage`)."""
    scale = min(1.0, opts.coarse_px / max(hw))
    feats = ray.get([_coarse_features.remote(work, k, scale, 2000) for k in range(n)])
    cv2.setRNGSeed(0)
    ro = opts.register
    out = []
    if candidates is None:
        candidates = [(i, j) for i in range(n) for j in range(i + 1, n)]
    for i, j in candidates:
        (pi, di), (pj, dj) = feats[i], feats[j]
        mt = match(di, dj, ro.ratio)
        if len(mt) < ro.min_inliers:
            continue
        M, inl = cv2.estimateAffinePartial2D(
            pj[mt[:, 1]], pi[mt[:, 0]], method=cv2.RANSAC, ransacReprojThreshold=max(2.0, 1.5 / scale)
        )
        if M is None or int(inl.sum()) < ro.min_inliers:
            continue
        h, w = hw
        c = apply(M, np.array([[0, 0], [w - 1, h - 1]], float))
        ox = max(0.0, min(c[1, 0], w - 1) - max(c[0, 0], 0))
        oy = max(0.0, min(c[1, 1], h - 1) - max(c[0, 1], 0))
        if ox * oy >= opts.min_overlap * h * w:
            out.append((i, j, M))
    return out


def level_axes(mats: list[np.ndarray | None], hw: tuple[int, int]) -> list[np.ndarray | None]:
    """Turn and scale the panorama so the frames' mean rotation is 0 and mean scale 1 (stage axes)."""
    placed = [local_similarity(m, _corners(hw)) for m in mats if m is not None]
    if not placed:
        return mats
    ang = float(np.mean([np.arctan2(m[1, 0], m[0, 0]) for m in placed]))
    sc = float(np.mean([np.hypot(m[0, 0], m[1, 0]) for m in placed]))
    c, s = np.cos(-ang) / sc, np.sin(-ang) / sc
    G = np.array([[c, -s, 0.0], [s, c, 0.0]])
    return [None if m is None else compose(G, m) for m in mats]


def _centres(mats: Sequence[np.ndarray | None], hw: tuple[int, int]) -> np.ndarray:
    """The placed frames' centres ``(n, 2)`` in panorama pixels."""
    h, w = hw
    centre = np.array([[(w - 1) / 2, (h - 1) / 2]])
    return np.array([apply(m, centre)[0] for m in mats if m is not None])


def _seam_scale(n: int, hw: tuple[int, int], megapixels: float) -> float:
    return float(min(0.5, np.sqrt(megapixels * 1e6 / (n * hw[0] * hw[1]))))


def work_root(store: str | Path) -> str:
    """The stitch work folder of a store: beside it, hidden (corrected frames, plans, run manifest)."""
    store = str(store) if fs.is_uri(store) else str(Path(fs.local(store)).resolve())
    return fs.join(fs.parent(store), f".{fs.name(store)}.stitch-work")


def _plan_file(work: str, section: str) -> str:
    return fs.join(work, section, "plan.pkl")


def _fingerprint(sec, correction: Correction, opts: StitchOptions) -> str:
    inputs = (
        [str(t) for t in sec.tiles],
        None if sec.nominal_xy is None else sec.nominal_xy.tolist(),
        None if sec.stage_um is None else sec.stage_um.tolist(),
        correction.key,
        _options_dict(opts),
    )
    return hashlib.sha256(pickle.dumps(inputs)).hexdigest()


def section_fingerprint(
    section_dir: str | Path, correction: Correction = Correction(), opts: StitchOptions = StitchOptions()
) -> str:
    """What a stitched section depends on (its tiles, positions, calibration and options), as a hash."""
    return _fingerprint(read_section(section_dir), correction, opts)


def _resumable(work: str, sec, store: str, fingerprint: str) -> tuple[RenderPlan, dict] | None:
    """The plan and report base of an unfinished earlier run of this section with the same inputs."""
    path = _plan_file(work, sec.section_id)
    if not fs.exists(path):
        return None
    saved = pickle.loads(fs.read_bytes(path))
    plan: RenderPlan = saved["plan"]
    if saved["fingerprint"] != fingerprint or plan.store != store or not fs.exists(fs.join(store, plan.group)):
        return None
    return plan, saved["report"]


@dataclass(frozen=True)
class CorrectionRef:
    """A :class:`Correction` already in the object store: the frame corrector's calls read it from
    there, so a task handed one makes no copy of the flat field."""

    ref: Any

    def get(self) -> Correction:
        return ray.get(self.ref)


@dataclass
class CorrectedSection:
    """A section whose frames :func:`correct_section` has corrected into its work folder ``work``:
    what :func:`plan_section` goes on from. ``thumbs``: each frame's thumbnail ``thumb_scale``× with
    its valid mask; ``stds``: each frame's grey-level spread; ``seconds``: how long correcting took."""

    section_dir: str
    sec: SectionInput
    store: str
    work: str
    fingerprint: str
    hw: tuple[int, int]
    thumb_scale: float
    thumbs: list[tuple[np.ndarray, np.ndarray]]
    stds: list[float]
    seconds: float


Prepared = tuple[RenderPlan, dict]


def correct_section(
    section_dir: str | Path,
    store: str | Path,
    correction: Correction | CorrectionRef,
    opts: StitchOptions,
    corrector: ray.actor.ActorHandle,
) -> CorrectedSection | Prepared:
    """Correct a section's frames with ``corrector`` (:func:`frame_corrector`) into its work folder,
    afresh: the first half of :func:`prepare_section`. A plan left by an unfinished run with the same
    inputs is returned as it is instead (its finished shards are kept)."""
    t0 = time.perf_counter()
    sec = read_section(section_dir)
    store = str(store) if fs.is_uri(store) else str(Path(fs.local(store)).resolve())
    work = work_root(store)
    corr = correction.get() if isinstance(correction, CorrectionRef) else correction
    fingerprint = _fingerprint(sec, corr, opts)
    resumed = _resumable(work, sec, store, fingerprint)
    if resumed is not None:
        return resumed
    section_work = fs.join(work, sec.section_id)
    fs.remove(section_work)
    fs.remove(fs.join(RunManifest(work).status_dir, sec.section_id))
    hw = image_header(sec.tiles[0])[:2]
    thumb_scale = _seam_scale(len(sec.tiles), hw, opts.seam_megapixels)
    given = correction.ref if isinstance(correction, CorrectionRef) else corr
    thumbs, stds = _correct_frames(corrector, sec, given, thumb_scale, section_work, hw)
    return CorrectedSection(
        str(section_dir), sec, store, section_work, fingerprint, hw, thumb_scale, thumbs, stds, time.perf_counter() - t0
    )


def prepare_section(
    section_dir: str | Path,
    store: str | Path,
    correction: Correction | CorrectionRef = Correction(),
    opts: StitchOptions = StitchOptions(),
    corrector: ray.actor.ActorHandle | None = None,
) -> Prepared:
    """Correct, register, solve, gains and seams of one section: its render plan and report base
    (:func:`correct_section`, then :func:`plan_section`).

    Frames are corrected by ``corrector`` (:func:`frame_corrector`; one of its own, dropped once
    the frames are corrected, when none is given).

    Writes the corrected frames and the plan to the section's work folder and creates the
    partial image group; a plan left by an unfinished run with the same inputs is reused as it
    is (its finished shards are kept), else the section starts afresh.
    """
    own = corrector is None
    actor = frame_corrector() if corrector is None else corrector
    try:
        corrected = correct_section(section_dir, store, correction, opts, actor)
    finally:
        if own:
            ray.kill(actor, no_restart=True)
        del actor
    return plan_section(corrected, correction, opts, corrector)


def plan_section(
    corrected: CorrectedSection | Prepared,
    correction: Correction | CorrectionRef,
    opts: StitchOptions,
    corrector: ray.actor.ActorHandle | None = None,
) -> Prepared:
    """Register, solve, gains and seams of a section :func:`correct_section` corrected: its render
    plan and report base (a resumed plan is passed through). When the lens refined over the
    section's overlaps changes, its frames are corrected again, by ``corrector`` or, when none is
    given, by one of its own (started as the lens bundle keeps its first term, so that its process
    starts while the bundle tries the others), which is handed the refined lens and the correction as it is (a
    :class:`CorrectionRef` is not copied: this task never touches the flat field)."""
    if not isinstance(corrected, CorrectedSection):
        return corrected
    t0 = time.perf_counter() - corrected.seconds  # "prepare" counts the correction too
    timings: dict[str, float] = {"correct": corrected.seconds}
    sec, store, section_work, hw = corrected.sec, corrected.store, corrected.work, corrected.hw
    thumb_scale, thumbs, stds = corrected.thumb_scale, corrected.thumbs, corrected.stds
    section_dir, fingerprint = corrected.section_dir, corrected.fingerprint
    work = work_root(store)
    n = len(sec.tiles)
    if sec.nominal_xy is not None:
        pairs = _nominal_pairs(sec.nominal_xy, hw, opts.min_overlap)
    elif sec.stage_um is not None:
        pairs = _coarse_pairs(section_work, n, hw, opts, stage_neighbours(sec.stage_um))
        nominal = stage_pixels(sec.stage_um, pairs, hw)
        pairs = pairs if nominal is None else _nominal_pairs(nominal, hw, opts.min_overlap)
    else:
        pairs = _coarse_pairs(section_work, n, hw, opts)
    t = time.perf_counter()
    register = _register_task
    if opts.register.matcher == "loftr" and ray.cluster_resources().get("GPU", 0) > 0:
        register = _register_task.options(num_gpus=1)  # the learned matcher runs on the task's GPU
    edges: list[Edge] = ray.get([register.remote(i, j, section_work, prior, opts.register) for i, j, prior in pairs])
    timings["register"] = time.perf_counter() - t
    t = time.perf_counter()
    al = solve(n, edges, opts=opts.align)
    lens_fit = None
    corr = correction.get() if isinstance(correction, CorrectionRef) else correction
    if corr.lens is not None and not corr.lens.is_identity:
        tl = time.perf_counter()
        own: list[ray.actor.ActorHandle] = []  # started as the bundle keeps a first term, while it tries the others

        def start() -> None:
            if corrector is None:
                own.append(frame_corrector())

        try:
            lens_fit, edges = refine_section_lens(edges, al, corr.lens, opts.refine_lens, on_refining=start)
            if lens_fit.refined:
                given = correction.ref if isinstance(correction, CorrectionRef) else corr
                corr = replace(corr, lens=lens_fit.lens)
                if not own:
                    start()
                actor = corrector if corrector is not None else own[0]
                thumbs, stds = _correct_frames(actor, sec, given, thumb_scale, section_work, hw, lens_fit.lens)
                del actor
                al = solve(n, edges, opts=opts.align)
        finally:
            for actor in own:
                ray.kill(actor, no_restart=True)
        timings["refine_lens"] = time.perf_counter() - tl
    conf = predict_errors(edges, al, hw, opts.align)
    timings["align"] = time.perf_counter() - t
    if n == 1 and al.transforms[0] is None:
        al.transforms[0], al.reference = np.eye(2, 3), 0
    placed = [m is not None for m in al.transforms]
    if not any(placed):
        raise LodeInputError(fs.join(section_dir, "tiles"), f"no pair of its {n} frames could be registered")
    al.transforms = level_axes(al.transforms, hw)
    boxes = [frame_box(m, hw) for m in al.transforms if m is not None]
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    shift = translation(-np.floor(x0), -np.floor(y0))
    mats: list[np.ndarray | None] = [None if m is None else compose(shift, m) for m in al.transforms]
    W = int(np.ceil(max(b[2] for b in boxes) - np.floor(x0))) + 1
    H = int(np.ceil(max(b[3] for b in boxes) - np.floor(y0))) + 1
    stage = None if sec.stage_um is None else fit_stage(sec.stage_um[placed], _centres(mats, hw))
    pixel_size, pixel_source, warning = section_pixel_size(
        opts.pixel_size_um, opts.pixel_size_source, stage, sec.section_id
    )

    t = time.perf_counter()
    s = thumb_scale
    S = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5]])
    Lh, Lw = int(np.ceil(H * s)), int(np.ceil(W * s))
    warped: list[np.ndarray | None] = []
    wmasks: list[np.ndarray | None] = []
    corners: list[tuple[int, int]] = []
    for k, m in enumerate(mats):
        if m is None:
            warped.append(None)
            wmasks.append(None)
            corners.append((0, 0))
            continue
        Ml = compose(compose(S, m), invert(S))
        th, tv = thumbs[k]
        bx0, by0, bx1, by1 = frame_box(Ml, th.shape[:2])
        cx, cy = int(np.floor(bx0)), int(np.floor(by0))
        size = (int(np.ceil(bx1)) - cx + 2, int(np.ceil(by1)) - cy + 2)
        Mc = compose(translation(-cx, -cy), Ml)
        warped.append(warp(th, Mc, size, cv2.INTER_LINEAR))
        wmasks.append(warp(tv, Mc, size, cv2.INTER_NEAREST))
        corners.append((cx, cy))
    pairs_means = overlap_means(warped, wmasks, corners)
    gains = solve_gains(n, pairs_means, placed)
    comp = [None if im is None else np.clip(im * gains[k], 0, 255).astype(np.uint8) for k, im in enumerate(warped)]
    labels = seam_labels(comp, wmasks, corners, (Lh, Lw))
    timings["gains_seams"] = time.perf_counter() - t

    plan = RenderPlan(
        sec.section_id,
        store,
        f".{sec.section_id}.partial",
        section_work,
        hw,
        tuple(mats),
        tuple(gains),
        s,
        opts.blend_sigma_low,
        (H, W),
        opts.shard,
        blend=opts.blend,
        blend_levels=opts.blend_levels,
        seam_refined=opts.seam_refine and opts.blend == "multiband",
    )
    create_partial(plan, labels, opts.levels, pixel_size)
    refined_pairs = 0
    if plan.seam_refined:
        t = time.perf_counter()
        refined_pairs = _refine_seams(plan, labels)
        timings["seam_refine"] = time.perf_counter() - t
    timings["prepare"] = time.perf_counter() - t0
    report = build_report(sec, hw, edges, al, conf, mats, gains, (H, W), placed, opts, timings, len(plan.blocks), stds)
    report["seam_labels"] = {
        "array": SEAM_LABELS,
        "scale": s,
        "refined": {"array": SEAM_REFINED, "pairs": refined_pairs} if plan.seam_refined else None,
    }
    report["lens"] = None if lens_fit is None else lens_fit.to_dict()
    report["correction"] = correction_record(corr)
    report["pixel_size_um"] = pixel_size
    report["pixel_size_source"] = pixel_source
    report["stage"] = None if stage is None else {**stage.to_dict(), "warning": warning}
    atomic_write_bytes(
        _plan_file(work, sec.section_id), pickle.dumps({"plan": plan, "report": report, "fingerprint": fingerprint})
    )
    return plan, report


def _correct_frames(
    corrector: Any,
    sec,
    correction: Correction | Any,
    thumb_scale: float,
    work: str,
    hw: tuple[int, int],
    lens: LensModel | None = None,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float]]:
    """Correct every frame of ``sec`` with ``corrector`` (:func:`frame_corrector`) into ``work`` with
    ``correction`` (or the ref of one in the object store), and ``lens`` in place of its own when
    given: the thumbnails and their valid masks, and the frames' grey-level std."""
    if isinstance(correction, Correction):
        _ = correction.key  # hashed here once and pickled with it, not by the actor for every frame
        correction = ray.put(correction)
    correct = corrector.correct.options(num_returns=2)
    outs = [correct.remote(str(p), correction, hw, thumb_scale, work, k, lens) for k, p in enumerate(sec.tiles)]
    stds = _frames_read([o[1] for o in outs])
    return ray.get([o[0] for o in outs]), stds


def _frames_read(refs: list) -> list[float]:
    """Wait for every frame's correction; the first unreadable frame (in tile order) raises its
    ``LodeInputError``, unwrapped from Ray's task error.

    Every task has ended before anything raises, so no frame task still writes into the section's
    work folder when the failed section's work is removed."""
    ray.wait(refs, num_returns=len(refs), fetch_local=False)
    try:
        return [float(v) for v in ray.get(refs)]
    except ray.exceptions.RayTaskError as exc:
        cause = input_error_of(exc)
        if cause is None:
            raise
        raise cause from None


def create_root(store: str | Path) -> None:
    """Create the store's root group, once, before sections are prepared in parallel: sections only
    add their own child groups (concurrent creators of a fresh root race, and zarr raises
    ``ContainsGroupError`` for all but one)."""
    open_store(store, mode="a")


def create_partial(plan: RenderPlan, labels: np.ndarray, levels: int, pixel_size_um: float | None = None) -> None:
    """(Re)create the plan's hidden partial image group, holding the seam label map (Lh, Lw) and,
    when the plan refines seams, an empty refined owner map ``plan.shape`` (chunked like the
    shards; chunks no band reaches are never stored); the store's root must exist (:func:`create_root`)."""
    root = open_store(plan.store, mode="r+")
    layout = PyramidLayout((plan.shard, plan.shard), levels=levels)
    create_image(
        root,
        plan.group,
        (3, *plan.shape),
        layout,
        channel_names=["R", "G", "B"],
        pixel_size_um=pixel_size_um,
        overwrite=True,
    )
    seams = group_at(root, plan.group).create_array(
        SEAM_LABELS, shape=labels.shape, dtype=np.int16, chunks=labels.shape, fill_value=-1
    )
    seams[...] = labels
    if plan.seam_refined:
        group_at(root, plan.group).create_array(
            SEAM_REFINED, shape=plan.shape, dtype=np.int16, chunks=(plan.shard, plan.shard), fill_value=-1
        )


def render_sections(plans: Sequence[RenderPlan], executor: str = "ray") -> StageRun:
    """Render every shard of ``plans`` on the raster runner (shards already done are skipped): in an
    actor per GPU when the cluster has GPUs, else in an actor per :data:`RENDER_THREADS` CPUs, each
    rendering that many shards side by side (one torch per actor; one CPU reserved, the rest left
    to the shards' writes)."""
    if not plans:
        return StageRun(0, 0, {}, "cpu", 0, 0.0)
    manifest = RunManifest(work_root(plans[0].store))
    manifest.begin("stitch", {}, {})
    units = [u for p in plans for u in p.units]
    options = RunOptions(executor="serial")
    if executor == "ray":
        resources = ray.cluster_resources()
        actors = None if resources.get("GPU", 0) > 0 else max(1, int(resources.get("CPU", 1)) // RENDER_THREADS)
        options = RunOptions(
            executor="ray",
            remote_args=fs.ray_remote_args(),
            read_in_compute=True,
            actors=actors,
            actor_cpus=None if actors is None else 1.0,
            compute_threads=RENDER_THREADS,
        )
    return run_stage(RenderStage({p.section: p for p in plans}), units, manifest, options)


def finish_section(plan: RenderPlan, report: dict, render_seconds: float) -> dict:
    """Record the report in the partial group, give it its final name and drop the section's work files
    (the work folder itself stays: other sections may be preparing there; see :func:`drop_work`)."""
    report = {
        **report,
        "timings_s": {
            **report["timings_s"],
            "render": round(render_seconds, 3),
            "total": round(report["timings_s"]["prepare"] + render_seconds, 3),
        },
    }
    if (report.get("stage") or {}).get("warning"):
        log.warning(report["stage"]["warning"])
    grp = open_store(plan.store, mode="a")[plan.group]
    grp.attrs["lode"] = {**attrs_of(grp)["lode"], "stitch": report}
    ome = dict(attrs_of(grp)["ome"])
    ome["multiscales"] = [{**ome["multiscales"][0], "name": plan.section}]
    grp.attrs["ome"] = ome
    _publish(plan.store, plan.group, plan.section)
    fs.remove(plan.work)
    fs.remove(fs.join(RunManifest(work_root(plan.store)).status_dir, plan.section))
    return report


def drop_work(store: str | Path) -> None:
    """Remove the store's work folder once no section's plan is left in it (none is preparing)."""
    work = work_root(store)
    if not fs.glob(fs.join(work, "*", "plan.pkl")):
        fs.remove(work)


def stitch_section(
    section_dir: str | Path,
    store: str | Path,
    correction: Correction = Correction(),
    opts: StitchOptions = StitchOptions(),
    executor: str = "ray",
    corrector: ray.actor.ActorHandle | None = None,
) -> dict:
    """Stitch ``<section_dir>/tiles`` into image group ``<section_id>`` of the OME-Zarr ``store``;
    ``executor`` renders the shards on Ray Data (``ray``) or in this process (``serial``);
    ``corrector``: a :func:`frame_corrector` to share (one of its own, dropped once the frames are
    prepared, when ``None``).

    Returns the stitch report (also stored in the group's attributes).
    """
    create_root(store)
    plan, report = prepare_section(section_dir, store, correction, opts, corrector)
    t = time.perf_counter()
    run = render_sections([plan], executor)
    if run.failed:
        key, reason = next(iter(run.failed.items()))
        raise LodeInputError(fs.join(str(section_dir), "tiles"), f"shard {key} failed: {reason}")
    report = finish_section(plan, report, time.perf_counter() - t)
    drop_work(store)
    return report


def _publish(store: str, partial: str, name: str) -> None:
    """Give a finished group its final name: a rename on disk; on an object store, which cannot
    rename, its objects are copied with the group's ``zarr.json`` last (readers find a section by
    that object: it is the commit marker), then the partial copy is removed."""
    if not fs.is_uri(store):
        publish(Path(store) / partial, Path(store) / name)
        return
    filesystem, root = fs.filesystem(store)
    src, dst = f"{root}/{partial}", f"{root}/{name}"
    filesystem.invalidate_cache()
    if filesystem.exists(dst):
        filesystem.rm(dst, recursive=True)
    for p in sorted(filesystem.find(src), key=lambda p: p == f"{src}/zarr.json"):
        filesystem.copy(p, dst + p[len(src) :])
    filesystem.rm(src, recursive=True)


def build_report(
    sec,
    hw,
    edges: list[Edge],
    al,
    conf: Confidence,
    mats,
    gains,
    shape,
    placed,
    opts: StitchOptions,
    timings: dict,
    n_shards: int,
    stds: Sequence[float],
) -> dict:
    names = [fs.name(p) for p in sec.tiles]
    n = len(names)
    by_frame: dict[int, list[Edge]] = {k: [] for k in range(n)}
    for e in edges:
        by_frame[e.i].append(e)
        by_frame[e.j].append(e)
    edge_rows = []
    for e in edges:
        key = (e.i, e.j)
        row = {
            "i": e.i,
            "j": e.j,
            "frames": [names[e.i], names[e.j]],
            "registered": e.ok,
            "reason": e.reason,
            "keypoints": list(e.keypoints),
            "matches": e.matches,
            "inliers": e.inliers,
            "fit_rms_px": None if not np.isfinite(e.fit_rms_px) else round(e.fit_rms_px, 4),
            "method": e.method,
            "correlation": None if not np.isfinite(e.correlation) else round(e.correlation, 4),
        }
        if key in al.rejected:
            row["rejected"] = al.rejected[key]
        if key in al.edge_rms_px:
            row["rms_px"] = round(al.edge_rms_px[key], 4)
            row["fit_px"] = round(conf.edge_fit_px[key], 4)
            loo = conf.edge_loo_px[key]
            row["leave_one_out_px"] = None if loo is None else round(loo, 4)
            row["sigma_px"] = round(conf.edge_sigma_px[key], 4)
            row["max_px"] = round(al.edge_max_px[key], 4)
            row["residual_points"] = al.edge_points[key]
        edge_rows.append(row)
    sq = sum(v**2 * al.edge_points[k] for k, v in al.edge_rms_px.items())
    npts = sum(al.edge_points.values())
    match_rms = float(np.sqrt(sq / npts)) if npts else None
    frames, flagged = [], []
    for k in range(n):
        mine = by_frame[k]
        flags = []
        if stds[k] < opts.blank_std:
            flags.append(f"blank: grey-level std {stds[k]:.2f} DN < {opts.blank_std} DN (no content)")
        if not placed[k]:
            side = [e.keypoints[0] if e.i == k else e.keypoints[1] for e in mine]
            if mine and max(side) < opts.register.min_inliers:
                flags.append("featureless: too few keypoints in its overlaps")
            elif not mine:
                flags.append("no neighbour at its nominal position")
            else:
                flags.append("no overlap found with any neighbour: not placed")
        worst = max((al.edge_rms_px.get((e.i, e.j), 0.0) for e in mine), default=0.0)
        if placed[k] and worst >= opts.flag_residual_px:
            flags.append(f"edge residual {worst:.2f} px >= {opts.flag_residual_px} px (lens or motion?)")
        if k in conf.one_edge:
            i, j = conf.one_edge[k]
            flags.append(f"supported by one edge ({names[i]}–{names[j]}): its position is not cross-checked")
        err = conf.frame_error_px.get(k)
        if err is not None and err >= opts.flag_error_px:
            flags.append(f"predicted error {err:.2f} px >= {opts.flag_error_px} px")
        row = {
            "file": names[k],
            "placed": placed[k],
            "gain": [round(float(g), 5) for g in gains[k]],
            "grey_std": round(stds[k], 3),
            "flags": flags,
            "edges_used": sum(1 for e in mine if (e.i, e.j) in al.edge_rms_px),
            "predicted_error_px": None if err is None else round(err, 4),
        }
        if mats[k] is not None:
            sc, ang = _similarity(mats[k], hw)
            row.update(transform=np.round(mats[k], 6).tolist(), scale=round(sc, 6), rotation_deg=round(ang, 5))
        frames.append(row)
        if flags:
            flagged.append(names[k])
    return {
        "section": sec.section_id,
        "frames_total": n,
        "frames_placed": int(sum(placed)),
        "flagged": flagged,
        "rms_px": None if conf.rms_px is None else round(conf.rms_px, 4),
        "match_rms_px": None if match_rms is None else round(match_rms, 4),
        "max_edge_rms_px": round(max(al.edge_rms_px.values()), 4) if al.edge_rms_px else None,
        "panorama_hw": list(shape),
        "reference_frame": names[al.reference] if al.reference >= 0 else None,
        "positions": (
            "nominal" if sec.nominal_xy is not None else "stage" if sec.stage_um is not None else "all-pairs search"
        ),
        "edges": edge_rows,
        "frames": frames,
        "shards": n_shards,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "options": _options_dict(opts),
    }


def correction_record(correction: Correction) -> dict:
    """What a section's frames were corrected with: the lens used (after refinement), whether a flat
    field was applied, and the correction's key (a hash of both)."""
    return {
        "lens": None if correction.lens is None else correction.lens.to_dict(),
        "flat": correction.flat is not None,
        "key": correction.key,
    }


def _options_dict(opts: StitchOptions) -> dict:
    d = asdict(opts)
    return {k: (v if not isinstance(v, tuple) else list(v)) for k, v in d.items()}
