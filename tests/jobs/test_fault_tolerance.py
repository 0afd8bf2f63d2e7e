"""Fault tolerance: a killed Ray worker changes nothing; one corrupt section fails alone with its
reason in the manifest; an unwritable output or a full disk fails before any work.

(A job killed mid-way and rerun resumes byte-identical: tests/segment/test_pipeline.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
import zarr

from engine.segment.checkpoint import read_card
from engine.segment.pipeline import STORE_NAME, SegmentOptions, run_segmentation
from jobs.cli import main as lode
from tests.conftest import monai_reference

ROOT = Path(__file__).resolve().parents[2]


def _segment_actor_processes(root_pid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            if "SegmentStageActor" in " ".join(p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


@pytest.mark.slow
@pytest.mark.ray
def test_killed_segmentation_worker_is_retried_and_the_output_is_unchanged(
    ray_session, small_panorama, tiny_checkpoint, tmp_path
):
    ref = tmp_path / "ref"
    run_segmentation(
        SegmentOptions(
            inputs=[str(small_panorama)],
            out=str(ref),
            checkpoint=str(tiny_checkpoint),
            block=(128, 128),
            probabilities="float32",
            batch_size=1,
        )
    )
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "jobs.segment",
        str(small_panorama),
        "--out",
        str(out),
        "--checkpoint",
        str(tiny_checkpoint),
        "--block",
        "128",
        "128",
        "--probabilities",
        "float32",
        "--batch-size",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    status = out / "_status" / "sec-a"
    killed: list[int] = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            actors = _segment_actor_processes(proc.pid)
            if actors and status.exists() and any(status.iterdir()):
                done_at_kill = len(list(status.glob("*.json")))
                for p in actors:
                    p.send_signal(signal.SIGKILL)
                    killed.append(p.pid)
                break
            time.sleep(0.05)
        log, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert killed, "no segmentation actor process was found to kill"
    assert done_at_kill < 12, "the worker should have been killed before the job ended"
    assert proc.returncode == 0, log[-3000:]
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in killed)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["blocks"]) == 12
    got, want = (zarr.open_group(str(d / STORE_NAME), mode="r")["sec-a"] for d in (out, ref))
    for key in ("labels/minerals/0", "labels/minerals/1", "probabilities/0"):
        assert got[key][:].tobytes() == want[key][:].tobytes(), key


def _collection(root: Path) -> None:
    from engine.synth.captures import CaptureConfig, capture_grid, write_section

    for name, seed in (("secA", 41), ("secB", 42), ("secC", 43)):
        write_section(root, name, capture_grid(None, CaptureConfig(frame_hw=(160, 220), seed=seed, rows=2, cols=2)))


@pytest.mark.ray
def test_one_corrupt_section_fails_alone_with_its_reason_in_the_manifest(ray_session, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    coll = tmp_path / "coll"
    _collection(coll)
    bad_tile = sorted((coll / "secB" / "tiles").iterdir())[1]
    data = bad_tile.read_bytes()
    bad_tile.write_bytes(data[: len(data) // 3])
    store = tmp_path / "out.zarr"
    rc = lode(["stitch", str(coll), "--out", str(store), "--shard", "256", "--no-lens", "--no-flat"])
    assert rc == 2
    manifest = json.loads((tmp_path / "out.zarr.manifest.json").read_text())
    assert manifest["job"] == "stitch" and manifest["status"] == "partial"
    units = manifest["units"]
    assert units["secB"]["status"] == "failed" and bad_tile.name in units["secB"]["reason"]
    assert units["secA"]["status"] == units["secC"]["status"] == "done"
    assert units["secA"]["frames_placed"] == units["secC"]["frames_placed"] == 4
    root = zarr.open_group(str(store), mode="r")
    assert sorted(n for n, _ in root.groups()) == ["secA", "secC"]
    assert manifest["versions"]["ray"] and manifest["config"]["collection"] == str(coll)


def _two_sections(store: Path, height: int) -> Path:
    """Sections ``sec-a`` and ``sec-b`` (height × 256, blocks of 128) in one OME-Zarr store."""
    from engine.io.ome import PyramidLayout
    from engine.synth import SectionSpec, write_panorama

    for name, seed in (("sec-a", 5), ("sec-b", 6)):
        write_panorama(
            store,
            name,
            height,
            256,
            SectionSpec(seed=seed, grain_diameter=30),
            PyramidLayout((128, 128), chunk=64, levels=2),
        )
    return store


def _labels_are_the_reference(out: Path, store: Path, section: str, checkpoint: Path) -> bool:
    """The section's labels equal MONAI's global sliding window with the engine's program."""
    codes = np.array([c["code"] for c in read_card(checkpoint).classes])
    labels = zarr.open_group(str(out / STORE_NAME), mode="r")[f"{section}/labels/minerals/0"][:]
    return np.array_equal(labels, codes[monai_reference(store, section, checkpoint, program=True).argmax(0)])


@pytest.mark.slow
@pytest.mark.ray
def test_one_corrupt_section_fails_alone_in_segmentation(ray_session, tmp_path, tiny_checkpoint, capsys):
    store = _two_sections(tmp_path / "in.zarr", 200)
    shard = store / "sec-b" / "0" / "c" / "0" / "1" / "0"
    original = shard.read_bytes()
    shard.write_bytes(original[:16] + bytes(b ^ 0xFF for b in original[16:-64]) + original[-64:])
    out = tmp_path / "run"
    argv = ["segment", str(store), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--block", "128", "128"]
    assert lode(argv) == 2
    err = capsys.readouterr().err
    assert f"{store}/sec-b" in err and "corrupt pixels" in err and "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "partial" and list(manifest["failed_sections"]) == ["sec-b"]
    status = {b["unit"]: b["status"] for b in manifest["blocks"]}
    failed = [b for b in manifest["blocks"] if b["status"] == "failed"]
    assert failed and all(b["unit"].startswith("sec-b/") and "corrupt" in b["reason"] for b in failed)
    assert "sec-b/000128_000000" in {b["unit"] for b in failed}
    assert all(v == "done" for k, v in status.items() if k.startswith("sec-a/"))
    assert _labels_are_the_reference(out, store, "sec-a", tiny_checkpoint)

    shard.write_bytes(original)
    assert lode(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["failed_sections"] == {}
    assert manifest["skipped_already_done"] == len(status) - len(failed)


@pytest.mark.ray
def test_sections_that_cannot_be_planned_fail_alone_in_segmentation(ray_session, tmp_path, tiny_checkpoint, capsys):
    store = _two_sections(tmp_path / "in.zarr", 128)
    meta = store / "sec-b" / "0" / "zarr.json"
    original = meta.read_bytes()
    meta.write_bytes(original[: len(original) // 2])  # unreadable array metadata
    from engine.io.ome import PyramidLayout
    from engine.synth import SectionSpec, write_panorama

    write_panorama(
        store, "sec-c", 128, 256, SectionSpec(seed=7, grain_diameter=30), PyramidLayout((128, 128), chunk=64, levels=2)
    )
    (store / "sec-c" / "0" / "c" / "0" / "0" / "1").unlink()  # a deleted image shard
    folder = tmp_path / "imgs"
    folder.mkdir()
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    cut = folder / "cut.jpg"
    cut.write_bytes(buf.tobytes()[: len(buf) - 200])  # truncated tail
    out = tmp_path / "run"
    argv = [
        "segment",
        str(store),
        str(folder),
        "--checkpoint",
        str(tiny_checkpoint),
        "--out",
        str(out),
        "--block",
        "128",
        "128",
    ]
    assert lode(argv) == 2
    err = capsys.readouterr().err
    assert str(cut) in err and "truncated" in err and "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "partial"
    failed = manifest["failed_sections"]
    assert sorted(failed) == ["cut", "sec-b", "sec-c"]
    assert (
        f"{store}/sec-c" in failed["sec-c"]
        and "damaged: 1 shard(s)" in failed["sec-c"]
        and "(0, 128)" in failed["sec-c"]
    )
    assert str(cut) in failed["cut"] and "truncated" in failed["cut"]
    assert f"{store}/sec-b" in failed["sec-b"] and "unreadable zarr metadata" in failed["sec-b"]
    status = {b["unit"]: b["status"] for b in manifest["blocks"]}
    assert status == {
        "sec-a/000000_000000": "done",
        "sec-a/000000_000128": "done",
        "cut/plan": "failed",
        "sec-b/plan": "failed",
        "sec-c/plan": "failed",
    }
    assert _labels_are_the_reference(out, store, "sec-a", tiny_checkpoint)

    # once its metadata is repaired the section joins the run; the finished one is not redone
    meta.write_bytes(original)
    assert lode(argv) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["failed_sections"]) == ["cut", "sec-c"] and manifest["skipped_already_done"] == 2
    assert [b["status"] for b in manifest["blocks"] if b["unit"].startswith("sec-b/")] == ["done", "done"]
    assert _labels_are_the_reference(out, store, "sec-b", tiny_checkpoint)


def _no_work_done(out: Path) -> None:
    assert not out.exists() or not any(out.rglob("*")), f"{out} was written to"


@pytest.mark.parametrize("job", ["segment", "stitch", "analyze", "lineaments", "prospect"])
def test_unwritable_output_fails_before_any_work(job, tmp_path, capsys, monkeypatch, small_panorama, tiny_checkpoint):
    from jobs.cli import load_job

    started = []
    monkeypatch.setattr(load_job(job), "run", lambda cfg: started.append(cfg))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "out"
    argv = {
        "segment": ["segment", str(small_panorama), "--checkpoint", str(tiny_checkpoint), "--out", str(out)],
        "stitch": ["stitch", str(tmp_path / "no-collection-needed"), "--out", str(out)],
        "analyze": ["analyze", str(tmp_path / "no-store-needed"), "--out", str(out)],
        "lineaments": ["lineaments", str(tmp_path / "no-grid-needed.nc"), "--out", str(out)],
        "prospect": ["prospect", "stack", "--spec", str(tmp_path / "no-spec.json"), "--out", str(out)],
    }[job]
    t = time.perf_counter()
    assert lode(argv) == 2
    assert time.perf_counter() - t < 5
    err = capsys.readouterr().err
    assert str(out) in err and "not writable" in err
    assert not started, "the job body ran"


@pytest.mark.parametrize("job", ["segment", "stitch"])
def test_full_output_disk_fails_before_any_work(job, tmp_path, capsys, monkeypatch, small_panorama, tiny_checkpoint):
    import shutil
    from collections import namedtuple

    real = shutil.disk_usage
    usage = namedtuple("usage", "total used free")

    def full(path):
        u = real(path)
        return usage(u.total, u.total - 4096, 4096) if str(path).startswith(str(tmp_path)) else u

    monkeypatch.setattr(shutil, "disk_usage", full)
    from jobs.cli import load_job

    started = []
    monkeypatch.setattr(load_job(job), "run", lambda cfg: started.append(cfg))
    out = tmp_path / "out"
    coll = tmp_path / "coll"
    if job == "stitch":
        _collection(coll)
    argv = {
        "segment": ["segment", str(small_panorama), "--checkpoint", str(tiny_checkpoint), "--out", str(out)],
        "stitch": ["stitch", str(coll), "--out", str(out)],
    }[job]
    assert lode(argv) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "disk is full" in err
    assert not started, "the job body ran"
    _no_work_done(out)
    assert not (tmp_path / "out.manifest.json").exists()
