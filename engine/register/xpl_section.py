"""Crossed-polar (XPL) panoramas of a stitched section, stacked after its PPL channels.

A section's raw XPL captures lie in ``<section>/xpl/<angle>/*``: one folder per crossed-polar
stage angle, each holding one capture per PPL tile under the tile's file stem (taken at the same
stage position, possibly a little shifted or turned). Every angle is

1. corrected like the tiles (the flat field and the lens the section was stitched with),
2. rendered with the PPL frames' transforms, gains and seams (the PPL render's own code:
   :class:`~engine.stitch.render.RenderStage`), rebuilt from the stitched section's report,
3. registered onto the PPL panorama (:func:`~engine.register.xpl.register_xpl`: SIFT + RANSAC
   affine, ECC refinement) over the panorama's fully covered interior: the refinement ``R``
   (2×3, XPL panorama px → PPL panorama px), near identity,
4. rendered again with ``R`` composed into every frame's transform (one resampling, not two).

The stacked section (:func:`stack_section_xpl`) is an image group ``(3 + k, H, W)``: the PPL
RGB, then each angle's XPL panorama in grey, in the model card's channel order; the angles' RGB
panoramas are its children ``xpl/<angle>``. Its stitch report gains ``xpl``: the angles used and
each refinement (transform, shift, residual).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.calibrate.flat import FlatField
from engine.calibrate.lens import LensModel
from engine.errors import LodeInputError, input_error_of
from engine.io import fs
from engine.io.images import image_header, list_images
from engine.io.integrity import is_complete, mark_complete
from engine.io.layout import FULL_RESOLUTION, array_at, attrs_of, group_at, level
from engine.io.manifest import RunManifest
from engine.io.ome import create_image, layout_of, open_store, write_block
from engine.raster import Unit, block_grid
from engine.raster.runner import RunOptions, run_stage
from engine.register.xpl import XplOptions, XplRegistration, register_xpl, xpl_channel_names
from engine.stitch.frames import Correction, read_section
from engine.stitch.register import compose, to_grey
from engine.stitch.render import RenderPlan, RenderStage

XPL = "xpl"


@dataclass(frozen=True)
class XplSectionOptions:
    """``registration``: the refinement's registration; ``max_shift_px``: the most a refinement may
    move a corner of the registered box (a larger one is a failed registration, not a stage offset);
    ``register_px``: the side of the central box of the panorama's covered interior registered
    (bounds its cost on a large panorama); ``executor``: ``ray`` or ``serial`` rendering."""

    registration: XplOptions = XplOptions()
    max_shift_px: float = 10.0
    register_px: int = 4096
    executor: str = "ray"


def xpl_folder(section_dir: str | Path) -> str:
    return fs.join(str(section_dir), XPL)


def has_xpl(section_dir: str | Path) -> bool:
    """Whether the section has an ``xpl/`` folder."""
    return fs.isdir(xpl_folder(section_dir))


def xpl_angles(section_dir: str | Path) -> dict[str, list[str]]:
    """``{angle folder name: its captures in the order of the section's tiles}``, folders sorted by name.

    Raises naming the folder when there is none, or when an angle's file stems are not the tiles'."""
    root = xpl_folder(section_dir)
    if not fs.isdir(root):
        raise LodeInputError(root, "no XPL captures (expected <section>/xpl/<angle>/<tile stem>.*)")
    tiles = read_section(section_dir).tiles
    stems = [Path(fs.name(t)).stem for t in tiles]
    folders = sorted(p.rstrip("/") for p in fs.glob(fs.join(root, "*")) if fs.isdir(p))
    if not folders:
        raise LodeInputError(root, "no <angle>/ folders")
    out: dict[str, list[str]] = {}
    for folder in folders:
        files = {Path(fs.name(f)).stem: str(f) for f in list_images(folder)}
        missing = [s for s in stems if s not in files]
        extra = sorted(set(files) - set(stems))
        if missing or extra:
            what = f"no capture for tile(s) {', '.join(missing[:5])}" if missing else ""
            what += ("; " if what else "") + (f"capture(s) {', '.join(extra[:5])} match no tile" if extra else "")
            raise LodeInputError(folder, f"XPL captures must have the tiles' file stems: {what}")
        out[fs.name(folder)] = [files[s] for s in stems]
    return out


def angles_for(channels: Sequence[str], angles: Sequence[str], folder: str) -> list[str]:
    """The angle folders giving the XPL ``channels`` (``XPL045`` ← ``045``; a folder ``45`` gives it
    too), in the channels' order; raises naming ``folder`` when one is missing."""
    named = dict(zip(xpl_channel_names(list(angles)), angles))
    numeric: dict[float, str] = {}
    for a in angles:
        try:
            numeric[float(a)] = a
        except ValueError:
            continue
    out = []
    for c in channels:
        found = named.get(c)
        if found is None:
            try:
                found = numeric.get(float(c.removeprefix("XPL")))
            except ValueError:
                found = None
        if found is None:
            raise LodeInputError(folder, f"no angle folder for channel {c} (has {', '.join(angles)})")
        out.append(found)
    return out


def section_plan(store: str, section: str, frame_hw: tuple[int, int]) -> tuple[RenderPlan, dict[str, Any]]:
    """The render plan of the stitched section ``store/section`` rebuilt from its stitch report
    (transforms, gains, seams, blend; the plan file itself is dropped once the section is
    published), and the report. ``work`` is left empty: the frames' folder is the caller's."""
    report = attrs_of(open_store(store)[section]).get("lode", {}).get("stitch")
    if report is None:
        raise LodeInputError(fs.join(store, section), "holds no stitch report: not a stitched section")
    opts = report["options"]
    if opts.get("model", "similarity") == "homography":
        raise LodeInputError(
            fs.join(store, section),
            "stitched with --model homography: its report keeps the transforms to 6 decimals, too few "
            "to render XPL captures with them (similarity transforms are kept exactly enough)",
        )
    mats = tuple(np.asarray(f["transform"], np.float64) if f["placed"] else None for f in report["frames"])
    gains = tuple(np.asarray(f["gain"], np.float64) for f in report["frames"])
    seams = report["seam_labels"]
    plan = RenderPlan(
        section,
        store,
        section,
        "",
        frame_hw,
        mats,
        gains,
        float(seams["scale"]),
        float(opts["blend_sigma_low"]),
        (int(report["panorama_hw"][0]), int(report["panorama_hw"][1])),
        int(opts["shard"]),
        blend=opts["blend"],
        blend_levels=opts["blend_levels"],
        seam_refined=seams.get("refined") is not None,
    )
    return plan, report


def section_correction(report: dict[str, Any], flat: FlatField | None, source: str) -> Correction:
    """The correction the section's tiles were stitched with: the lens of its report (refined, if it
    was) and ``flat`` (the collection's); raises naming ``source`` when they are not that correction."""
    rec = report["correction"]
    lens = None if rec.get("lens") is None else LensModel.from_dict(rec["lens"], source)
    corr = Correction(lens, flat if rec.get("flat") else None)
    if rec.get("flat") and flat is None:
        raise LodeInputError(source, "the section was stitched with a flat field; none was given for its XPL captures")
    if corr.key != rec.get("key"):
        raise LodeInputError(source, "the collection's calibration changed since the section was stitched")
    return corr


class XplRenderStage(RenderStage):
    """:class:`RenderStage` over the plans of XPL angles: each plan reads its section's seams and its
    own corrected frames; its shards go to ``targets[raster]`` (store, group) instead of the plan's group."""

    name = "xpl-render"

    def __init__(self, plans: dict[str, RenderPlan], targets: dict[str, tuple[str, str]]):
        super().__init__(plans)
        self.targets = targets

    def write(self, unit: Unit, result: dict[str, Any]) -> dict[str, Any]:
        store, group = self.targets[unit.raster]
        b = unit.block
        write_block(group_at(open_store(store, mode="r+"), group), np.asarray(result["image"]), b.y0, b.x0, "image")
        return {"windows": int(result["nframes"])}


def _render(plans: dict[str, RenderPlan], targets: dict[str, tuple[str, str]], work: str, executor: str) -> None:
    manifest = RunManifest(work)
    fs.remove(manifest.status_dir)
    manifest.begin("xpl-render", {}, {})
    options = (
        RunOptions(executor="ray", remote_args=fs.ray_remote_args(), read_in_compute=True)
        if executor == "ray"
        else RunOptions(executor="serial")
    )
    units = [u for p in plans.values() for u in p.units]
    run = run_stage(XplRenderStage(plans, targets), units, manifest, options)
    if run.failed:
        key, reason = next(iter(run.failed.items()))
        raise LodeInputError(work, f"XPL shard {key} failed: {reason}")


def _correct(corrector: Any, files: Sequence[str], corr: Correction, hw: tuple[int, int], work: str) -> None:
    """Correct ``files`` into ``work``'s frame cache (:class:`~engine.stitch.frames.FrameCorrector`,
    frame ``k`` = ``files[k]``); the first unreadable capture raises its ``LodeInputError``."""
    import ray

    ref = ray.put(corr)
    correct = corrector.correct.options(num_returns=2)
    stds = [correct.remote(str(f), ref, hw, 0.05, work, k)[1] for k, f in enumerate(files)]
    ray.wait(stds, num_returns=len(stds), fetch_local=False)
    try:
        ray.get(stds)
    except ray.exceptions.RayTaskError as exc:
        cause = input_error_of(exc)
        if cause is None:
            raise
        raise cause from None


def covered_box(valid: np.ndarray, step: int = 4) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of a box holding only ``valid`` ``(h, w)`` bool pixels: the valid pixels'
    bounding box, shrunk ``step`` px at a time on the side with the largest share of invalid pixels."""
    ys, xs = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    if not len(ys):
        return 0, 0, 0, 0
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    while y1 - y0 > 2 * step and x1 - x0 > 2 * step:
        bad = [
            float((~valid[y0 : y0 + step, x0:x1]).mean()),
            float((~valid[y1 - step : y1, x0:x1]).mean()),
            float((~valid[y0:y1, x0 : x0 + step]).mean()),
            float((~valid[y0:y1, x1 - step : x1]).mean()),
        ]
        worst = int(np.argmax(bad))
        if bad[worst] == 0:
            break
        if worst == 0:
            y0 += step
        elif worst == 1:
            y1 -= step
        elif worst == 2:
            x0 += step
        else:
            x1 -= step
    return y0, y1, x0, x1


def registration_box(group: Any, register_px: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of the box of the stitched panorama image ``group`` that the XPL
    refinement registers: the central part (at most ``register_px`` a side) of its covered interior,
    found on its coarsest level (0 where no frame is valid) and kept a coarse pixel inside."""
    k = layout_of(group).levels - 1
    coarse = np.asarray(array_at(group, level(k))[...])
    y0, y1, x0, x1 = (v << k for v in covered_box(coarse.max(0) > 0))
    f = 2 << k
    y0, y1, x0, x1 = y0 + f, y1 - f, x0 + f, x1 - f
    half = register_px // 2
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    return max(y0, cy - half), min(y1, cy + half), max(x0, cx - half), min(x1, cx + half)


def refine(
    ppl: np.ndarray,
    xpl: np.ndarray,
    origin: tuple[int, int],
    options: XplSectionOptions = XplSectionOptions(),
    source: str = "xpl",
) -> tuple[XplRegistration, float]:
    """Register the XPL panorama's box ``xpl`` onto the PPL panorama's same box ``ppl`` (both
    ``(h, w, 3)`` uint8, at panorama px ``origin`` ``(y0, x0)``): the registration, with its ``M``
    in panorama px, and its shift (px: the most a corner of the box moves). Raises naming
    ``source`` when it fails or moves more than ``max_shift_px``."""
    import cv2

    h, w = ppl.shape[:2]
    if min(h, w) < 64:
        raise LodeInputError(source, f"the panorama's covered interior ({h}×{w} px) is too small to register")
    cv2.setRNGSeed(0)
    reg = register_xpl(ppl, xpl, options.registration, source)
    o = np.array(origin[::-1], np.float64)
    M = reg.M.copy()
    M[:, 2] += o - M[:, :2] @ o
    corners = o + np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    shift = float(np.hypot(*(corners @ M[:, :2].T + M[:, 2] - corners).T).max())
    if shift > options.max_shift_px:
        raise LodeInputError(
            source, f"registers {shift:.1f} px away from the PPL frames' transforms (> {options.max_shift_px} px)"
        )
    return replace(reg, M=M), shift


def _box(group: Any, box: tuple[int, int, int, int]) -> np.ndarray:
    """Level 0 of image ``group`` over ``box`` ``(y0, y1, x0, x1)`` as ``(h, w, c)``."""
    y0, y1, x0, x1 = box
    return np.ascontiguousarray(np.moveaxis(np.asarray(array_at(group, FULL_RESOLUTION)[:, y0:y1, x0:x1]), 0, -1))


def _fingerprint(report: dict, channels: Sequence[str], captures: dict[str, list[str]]) -> str:
    doc = json.dumps([report, list(channels), captures], sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def stack_section_xpl(
    section_dir: str | Path,
    panoramas: str,
    section: str,
    out: str,
    channels: Sequence[str],
    flat: FlatField | None,
    corrector: Any,
    work: str,
    options: XplSectionOptions = XplSectionOptions(),
) -> dict[str, Any]:
    """Render, refine and stack the XPL angles giving ``channels`` (the model card's XPL channels,
    in order) of the stitched section ``panoramas/section`` into image group ``out/section``
    ``(3 + len(channels), H, W)`` uint8: PPL RGB, then each angle in grey; each angle's RGB
    panorama ``(3, H, W)`` is its child ``xpl/<angle>``.

    ``flat``: the collection's flat field (the lens comes from the section's report);
    ``corrector``: a :func:`~engine.stitch.section.frame_corrector`; ``work``: a folder for the
    corrected captures and render records (removed at the end). A group left complete by an
    earlier call with the same inputs is kept. Returns the record stored in its stitch report
    under ``xpl``; raises ``LodeInputError`` naming the section's ``xpl`` folder (or capture)."""
    folder = xpl_folder(section_dir)
    captures = xpl_angles(section_dir)
    use = angles_for(channels, list(captures), folder)
    hw = image_header(read_section(section_dir).tiles[0])[:2]
    plan, report = section_plan(panoramas, section, hw)
    fingerprint = _fingerprint(report, channels, {a: captures[a] for a in use})
    root = open_store(out, mode="a")
    if section in root and is_complete(group_at(root, section)):
        done = attrs_of(group_at(root, section))["lode"]["stitch"].get(XPL, {})
        if done.get("fingerprint") == fingerprint:
            return done
    corr = section_correction(report, flat, folder)
    ppl_group = group_at(open_store(panoramas), section)
    layout = layout_of(ppl_group)
    pixel_size = report.get("pixel_size_um")
    names = ["R", "G", "B", *channels]
    grp = create_image(
        root,
        section,
        (3 + len(use), *plan.shape),
        layout,
        channel_names=names,
        pixel_size_um=pixel_size,
        overwrite=True,
    )
    mark_complete(grp, False)
    angles_group = grp.create_group(XPL)
    for a in use:
        create_image(angles_group, a, (3, *plan.shape), layout, channel_names=["R", "G", "B"], pixel_size_um=pixel_size)
    box = registration_box(ppl_group, options.register_px)
    ppl_box = _box(ppl_group, box)
    plans = {f"{section}.{XPL}.{a}": replace(plan, section=f"{section}.{XPL}.{a}", work=fs.join(work, a)) for a in use}
    targets = {k: (out, f"{section}/{XPL}/{a}") for k, a in zip(plans, use)}
    per_angle: dict[str, Any] = {}
    try:
        for p, a in zip(plans.values(), use):
            fs.remove(p.work)
            _correct(corrector, captures[a], corr, hw, p.work)
        _render(plans, targets, fs.join(work, "render"), options.executor)
        for (key, p), a in zip(list(plans.items()), use):
            xpl_box = _box(group_at(grp, f"{XPL}/{a}"), box)
            reg, shift = refine(ppl_box, xpl_box, (box[0], box[2]), options, fs.join(folder, a))
            plans[key] = replace(p, mats=tuple(None if m is None else compose(reg.M, m) for m in p.mats))
            per_angle[a] = {
                "channel": channels[use.index(a)],
                "transform": np.round(reg.M, 6).tolist(),
                "shift_px": round(shift, 4),
                "rms_px": round(reg.rms_px, 4),
                "matches": reg.matches,
                "inliers": reg.inliers,
                "ecc": reg.refined,
            }
        _render(plans, targets, fs.join(work, "render"), options.executor)
    finally:
        fs.remove(work)
    for b in block_grid(*plan.shape, layout.block):
        ys, xs = slice(b.y0, b.y0 + b.h), slice(b.x0, b.x0 + b.w)
        chans = [np.asarray(array_at(ppl_group, FULL_RESOLUTION)[:, ys, xs])]
        for a in use:
            xpl = array_at(group_at(grp, f"{XPL}/{a}"), FULL_RESOLUTION)[:, ys, xs]
            chans.append(to_grey(np.ascontiguousarray(np.moveaxis(np.asarray(xpl), 0, -1)))[None])
        write_block(grp, np.concatenate(chans, axis=0), b.y0, b.x0, "image")
    record = {
        "angles": use,
        "channels": list(channels),
        "folder": folder,
        "residual_px": max(v["rms_px"] for v in per_angle.values()),
        "max_shift_px": max(v["shift_px"] for v in per_angle.values()),
        "refinement": per_angle,
        "fingerprint": fingerprint,
    }
    grp.attrs["lode"] = {**attrs_of(grp)["lode"], "stitch": {**report, XPL: record}}
    for a in use:
        mark_complete(group_at(grp, f"{XPL}/{a}"))
    mark_complete(grp)
    return record
