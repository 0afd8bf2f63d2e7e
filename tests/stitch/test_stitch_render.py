"""Shard rendering on the raster runner: from the exact plans the old shard tasks rendered
(fixtures/render_plans.npz), with OpenCV's warps every pyramid level has the bytes the old code wrote,
feathered and multiband (fixtures/render_pinned.json), and the render's own kornia warps change 0.1 %
of the pixels, nearly all by one grey level; a shard's read carries the frames' windows alone, and
shards read in Ray tasks render alike; a killed ``lode stitch`` resumes at its unfinished shards."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from engine.io import fs
from engine.stitch import render
from engine.stitch.frames import Correction
from engine.stitch.section import (
    StitchOptions,
    create_partial,
    create_root,
    prepare_section,
    render_sections,
    work_root,
)
from engine.stitch.warp import warp
from engine.synth.captures import CaptureConfig, capture_grid, write_section
from tests.cluster_utils import kill_session

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.ray


def _config(c: dict) -> CaptureConfig:
    make = CaptureConfig.degraded if c["degraded"] else CaptureConfig
    return make(frame_hw=(200, 300), seed=c["seed"], rows=c["rows"], cols=c["cols"])


def _hashes(group: zarr.Group) -> dict[str, str]:
    return {k: hashlib.sha256(group[k][:].tobytes()).hexdigest() for k in ("0", "1", "2")}


def _pinned_plans(tmp_path: Path, corrector, blend: str, out: str) -> list[render.RenderPlan]:
    """Each pinned section's plan, with its partial group created in the store ``out``."""
    pinned = json.loads((FIXTURES / "render_pinned.json").read_text())
    plans = np.load(FIXTURES / "render_plans.npz")
    store = tmp_path / out
    create_root(store)
    frozen = []
    for name, pin in pinned.items():
        write_section(tmp_path / "coll", name, capture_grid(None, _config(pin["config"])))
        plan, _ = prepare_section(
            tmp_path / "coll" / name,
            store,
            Correction(),
            StitchOptions(shard=128, blend=blend, seam_refine=False),
            corrector,
        )
        mats = tuple(np.array(m) for m in plans[f"{name}_mats"])
        plan = replace(
            plan,
            mats=mats,
            gains=tuple(np.array(g) for g in plans[f"{name}_gains"]),
            scale=pin["scale"],
            sigma_low=pin["sigma_low"],
            shape=tuple(pin["shape"][1:]),
        )
        create_partial(plan, plans[f"{name}_labels"], 3)
        assert len(plan.units) == pin["shards"]
        frozen.append(plan)
    return frozen


def _render_pinned(tmp_path: Path, corrector, blend: str, executor: str, out: str) -> dict[str, zarr.Group]:
    """Each pinned section's partial group, rendered by ``executor`` from its pinned plan into ``out``."""
    pinned = json.loads((FIXTURES / "render_pinned.json").read_text())
    frozen = _pinned_plans(tmp_path, corrector, blend, out)
    run = render_sections(frozen, executor)
    assert run.ran == sum(p["shards"] for p in pinned.values()) and not run.failed
    assert run.device == "cpu" and (run.actors == 1 if executor == "ray" else True)
    root = zarr.open_group(str(tmp_path / out), mode="r")
    return {p.section: root[p.group] for p in frozen}


@pytest.mark.parametrize("blend", ["feather", "multiband"])
@pytest.mark.parametrize("executor", [pytest.param("ray", marks=pytest.mark.slow), "serial"])
def test_render_from_pinned_plans_writes_the_pinned_bytes(tmp_path, corrector, executor, blend, monkeypatch):
    from tests.stitch.conftest import OpenCVWarper

    """``sha256``: the feathered bytes of the old shard tasks; ``multiband_sha256``: the multiband
    bytes of the render before it went channel by channel (at 1d1a7f5). Both with OpenCV's warps,
    which the render used until its warps moved to kornia; with kornia's (in the stage's actor under
    ``ray``), 99.9 % of every level's bytes are equal, 99.999 % within a grey level (a 0.5 rounding
    tie, or a mask's nearest neighbour on the edge, can make two) and none further."""
    pinned = json.loads((FIXTURES / "render_pinned.json").read_text())
    with monkeypatch.context() as m:
        m.setattr(render, "FrameWarper", OpenCVWarper)
        opencv = _render_pinned(tmp_path, corrector, blend, "serial", "opencv.zarr")
    key = "sha256" if blend == "feather" else "multiband_sha256"
    for name, group in opencv.items():
        assert _hashes(group) == pinned[name][key], name
    kornia = _render_pinned(tmp_path, corrector, blend, executor, "kornia.zarr")
    for name, group in kornia.items():
        for level in ("0", "1", "2"):
            diff = np.abs(group[level][:].astype(np.int16) - opencv[name][level][:].astype(np.int16))
            assert (diff == 0).mean() >= 0.999 and (diff <= 1).mean() >= 0.99999 and diff.max() <= 2, (name, level)


def test_a_shard_read_carries_only_the_windows_its_render_reads(tmp_path, corrector):
    """What a shard's read hands its render (over the object store when reads run in tasks, as they do
    for GPU actors) holds of each frame the window the render reads, where it lies in the frame, and
    nothing of the rest (the pinned-bytes test renders from these reads)."""
    import pickle

    plans = _pinned_plans(tmp_path, corrector, "multiband", "reads.zarr")
    stage = render.RenderStage({p.section: p for p in plans})
    whole = carried = 0
    for u in (u for p in plans for u in p.units):
        plan = stage.plans[u.raster]
        data = stage.read(u)
        windows = stage.windows(u)
        cuts = [win for _, win in windows if win is not None]
        assert data["pixels"].nbytes == sum((r.stop - r.start) * (c.stop - c.start) * 3 for r, c in cuts)
        frames = stage._frames(plan.frame_hw, data["pixels"], data["windows"][:-1])
        assert [int(k) for k in data["frames"][:-1]] == [k for k, _ in windows] and len(frames) == len(windows)
        for (k, win), image in zip(windows, frames):
            outside = np.ones(plan.frame_hw, bool)
            if win is not None:
                truth = render.load_frame(render.frame_path(plan.work, k, "image"))
                assert np.array_equal(image[win], truth[win])
                outside[win] = False
            assert not image[outside].any()
        whole += len(windows) * plan.frame_hw[0] * plan.frame_hw[1] * 3
        carried += len(pickle.dumps(data["pixels"], protocol=5))
    assert carried < 0.6 * whole, (carried, whole)  # 35 % on these plans


@pytest.mark.slow
def test_shards_read_in_ray_tasks_render_the_bytes_of_shards_read_where_they_render(tmp_path, corrector):
    """Shards read in Ray tasks (as for GPU actors) and rendered in an actor from what travelled have
    the bytes of shards read and rendered in one process."""
    from engine.io.manifest import RunManifest
    from engine.raster.runner import RunOptions, run_stage

    plans = _pinned_plans(tmp_path, corrector, "multiband", "tasks.zarr")
    units = [u for p in plans for u in p.units]
    manifest = RunManifest(work_root(plans[0].store))
    manifest.begin("stitch", {}, {})
    options = RunOptions(executor="ray", read_in_compute=False, actors=1, actor_cpus=1.0)
    run = run_stage(render.RenderStage({p.section: p for p in plans}), units, manifest, options)
    assert run.ran == len(units) and not run.failed
    one = _render_pinned(tmp_path, corrector, "multiband", "serial", "serial.zarr")
    got = zarr.open_group(str(tmp_path / "tasks.zarr"), mode="r")
    for p in plans:
        for level in ("0", "1", "2"):
            assert np.array_equal(got[p.group][level][:], one[p.section][level][:]), (p.section, level)


@pytest.mark.slow
def test_killed_stitch_resumes_byte_identical(tmp_path):
    for name, cfg in (
        ("secA", CaptureConfig(frame_hw=(200, 300), seed=21)),
        ("secB", CaptureConfig.degraded(frame_hw=(200, 300), seed=31, rows=2, cols=3)),
    ):
        write_section(tmp_path / "coll", name, capture_grid(None, cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}

    def cmd(out: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "jobs.stitch",
            str(tmp_path / "coll"),
            "--out",
            str(out),
            "--shard",
            "64",
            "--levels",
            "2",
        ]

    out = tmp_path / "run.zarr"
    status = Path(work_root(out)) / "_status"
    proc = subprocess.Popen(
        cmd(out), env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(status.glob("*/*.json")):
        time.sleep(0.05)
    kill_session(proc)
    done = {p.parent.name + "/" + p.stem for p in status.glob("*/[!.]*.json")}
    assert done, "no shard was finished before the kill"
    root = zarr.open_group(str(out), mode="r")
    groups = {n for n, _ in root.groups()}
    assert not {"secA", "secB"} & groups, "a section was published before it was complete"
    # sections stream (one in flight on 2 CPUs): the second may not have started at the kill
    started = {s for s in ("secA", "secB") if f".{s}.partial" in groups}
    assert {d.split("/")[0] for d in done} <= started
    partial = {s: root[f".{s}.partial"]["0"][:] for s in started}

    subprocess.run(cmd(out), env=env, check=True, capture_output=True, timeout=600)
    subprocess.run(cmd(tmp_path / "ref.zarr"), env=env, check=True, capture_output=True, timeout=600)
    got, ref = zarr.open_group(str(out), mode="r"), zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")
    for s in ("secA", "secB"):
        for k in ("0", "1"):
            assert got[s][k][:].tobytes() == ref[s][k][:].tobytes(), (s, k)
        assert got[s].attrs["lode"]["stitch"]["frames"] == ref[s].attrs["lode"]["stitch"]["frames"]
        # the rerun skipped the killed run's shards: they hold what the killed run wrote
        for key in (d for d in done if d.startswith(s + "/")):
            y0, x0 = (int(v) for v in key.split("/")[1].split("_"))
            assert np.array_equal(partial[s][:, y0 : y0 + 64, x0 : x0 + 64], got[s]["0"][:, y0 : y0 + 64, x0 : x0 + 64])
    assert not fs.exists(work_root(out))
    summary = json.loads((tmp_path / "run.zarr.stitch.json").read_text())
    assert all("error" not in r for r in summary["sections"].values())
    assert summary["render"]["skipped"] == len(done)


@pytest.mark.parametrize("homography", [False, True])
def test_a_frame_cut_to_its_source_window_warps_into_the_box_alike(homography):
    """What a render reads of a frame (:func:`source_window`) is all its warp into the box needs: the
    frame zeroed outside that window warps to the same bytes, cubic and nearest, with the render's
    kornia warps and with OpenCV's."""
    from engine.stitch.register import compose, translation
    from engine.stitch.render import source_window, untouched_zeros
    from engine.stitch.warp import FrameWarper

    warper = FrameWarper()

    rng = np.random.default_rng(5)
    hw = (200, 300)
    frame = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    cuts = 0
    for _ in range(20):
        a, s = rng.uniform(-0.05, 0.05), rng.uniform(0.97, 1.03)
        M = np.array([[s * np.cos(a), -s * np.sin(a), rng.uniform(-60, 60)], [s * np.sin(a), s * np.cos(a), 0.0]])
        M[1, 2] = rng.uniform(-40, 40)
        if homography:
            M = np.vstack([M, [rng.uniform(-2e-5, 2e-5), rng.uniform(-2e-5, 2e-5), 1.0]])
        box = (int(rng.integers(-60, 200)), int(rng.integers(-80, 300)), 96, 128)
        window = source_window(M, hw, box)
        F = compose(translation(-box[1], -box[0]), M)
        full = warp(frame, F, (box[3], box[2]), cv2.INTER_CUBIC)
        cut = untouched_zeros((*hw, 3), np.uint8)
        if window is None:
            assert not full.any()
            continue
        cuts += (window[0].stop - window[0].start) * (window[1].stop - window[1].start) < hw[0] * hw[1]
        cut[window] = frame[window]
        assert np.array_equal(warp(cut, F, (box[3], box[2]), cv2.INTER_CUBIC), full)
        assert np.array_equal(
            warp(cut, F, (box[3], box[2]), cv2.INTER_NEAREST), warp(frame, F, (box[3], box[2]), cv2.INTER_NEAREST)
        )
        for mode in ("bicubic", "nearest"):
            assert np.array_equal(warper(cut, F, (box[3], box[2]), mode), warper(frame, F, (box[3], box[2]), mode))
    assert cuts >= 10  # the windows are real cuts, not whole frames
