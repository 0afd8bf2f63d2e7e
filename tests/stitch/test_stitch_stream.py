"""A collection streams: at most K sections in flight, each finished section recorded in the job's
manifest and skipped on rerun, and a SIGKILLed job resumes to the same store as an uninterrupted one."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.stitch.collection import sections_in_flight
from engine.synth.captures import CaptureConfig, capture_grid, write_section
from jobs import stitch as stitch_job
from tests.cluster_utils import kill_session

ROOT = Path(__file__).resolve().parents[2]


def _collection(root: Path, n: int) -> Path:
    for s in range(n):
        cfg = CaptureConfig(rows=2, cols=2, frame_hw=(160, 240), seed=40 + s)
        write_section(root, f"sec{s}", capture_grid(None, cfg))
    return root


def _argv(coll: Path, store: Path, k: int) -> list[str]:
    return [str(coll), "--out", str(store), "--shard", "128", "--sections-in-flight", str(k)]


def _run(coll: Path, store: Path, k: int) -> int:
    job = stitch_job.JOB
    return stitch_job.run(job.validate(job.parser().parse_args(_argv(coll, store, k))))


def _units(store: Path) -> dict:
    path = Path(str(store) + ".manifest.json")
    try:
        return json.loads(path.read_text()).get("units", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _chunks(store: Path) -> dict[str, bytes]:
    """Every file of the store but the groups' and arrays' metadata (reports hold timings)."""
    return {
        str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != "zarr.json"
    }


def test_default_in_flight_follows_cpus_and_object_store():
    gib = 2**30
    assert sections_in_flight({"CPU": 2.0, "object_store_memory": 8.0 * gib}, 100 * 2**20) == 1
    assert sections_in_flight({"CPU": 8.0, "object_store_memory": 8.0 * gib}, 100 * 2**20) == 4
    assert sections_in_flight({"CPU": 16.0, "object_store_memory": 8.0 * gib}, 1 * gib) == 4
    assert sections_in_flight({"CPU": 16.0, "object_store_memory": 1.0 * gib}, 3 * gib) == 1
    assert sections_in_flight({"CPU": 6.0}, 0) == 3


def test_bad_in_flight_is_refused():
    with pytest.raises(SystemExit):
        stitch_job.JOB.parser().parse_args(["c", "--out", "o.zarr", "--sections-in-flight", "0"])


@pytest.mark.ray
def test_never_more_than_k_sections_in_flight_and_a_rerun_skips_them(tmp_path, ray_session, monkeypatch):
    from engine.stitch import section

    started, killed = [], []
    start, kill = section.frame_corrector, ray_session.kill

    def frame_corrector(*a):
        started.append(start(*a))
        return started[-1]

    monkeypatch.setattr(section, "frame_corrector", frame_corrector)
    monkeypatch.setattr(ray_session, "kill", lambda actor, **kw: killed.append(actor) or kill(actor, **kw))
    coll, store = _collection(tmp_path / "coll", 3), tmp_path / "out.zarr"
    assert _run(coll, store, 2) == 0
    assert len(started) == 1  # one frame corrector for the job, started before the calibration is fitted
    assert killed == started  # and ended as the last section's frames are corrected, not left to Ray's collector
    units = _units(store)
    assert sorted(units) == [f"sec{s}" for s in range(3)] and all(u["status"] == "done" for u in units.values())
    events = sorted((e, +1 if i == 0 else -1) for u in units.values() for i, e in enumerate(u["events"]))
    assert len({e for e, _ in events}) == 6  # one start or finish per event
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak == 2
    summary = json.loads((tmp_path / "out.zarr.stitch.json").read_text())
    assert summary["sections_in_flight"] == 2 and summary["skipped_sections"] == []
    before = _chunks(store)
    assert _run(coll, store, 2) == 0
    summary = json.loads((tmp_path / "out.zarr.stitch.json").read_text())
    assert summary["skipped_sections"] == [f"sec{s}" for s in range(3)] and summary["render"]["shards"] == 0
    assert len(started) == 1  # a rerun with every section done starts none
    assert summary["sections"]["sec1"]["frames_placed"] == 4
    assert _chunks(store) == before


@pytest.mark.slow
@pytest.mark.ray
def test_killed_collection_resumes_at_its_first_unfinished_section(tmp_path, ray_session):
    coll, killed, whole = _collection(tmp_path / "coll", 3), tmp_path / "killed.zarr", tmp_path / "whole.zarr"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    cmd = [sys.executable, "-m", "jobs.stitch", *_argv(coll, killed, 1), "--num-cpus", "1"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while not _units(killed) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        kill_session(proc)
    done = {k for k, u in _units(killed).items() if u["status"] == "done"}
    assert done == {"sec0"}, f"{done} done when killed: {proc.stderr.read()[-2000:]}"
    assert not (killed / "sec1").exists() and not (killed / "sec2").exists()

    assert _run(coll, killed, 1) == 0
    summary = json.loads((tmp_path / "killed.zarr.stitch.json").read_text())
    assert summary["skipped_sections"] == ["sec0"]
    assert set(_units(killed)) == {"sec0", "sec1", "sec2"}
    assert _run(coll, whole, 1) == 0
    a, b = _chunks(killed), _chunks(whole)
    assert sorted(a) == sorted(b) and any(k.startswith("sec2/") for k in a)
    assert all(a[k] == b[k] for k in a)
