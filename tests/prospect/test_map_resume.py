"""Kill and resume: SIGKILL ``python -m jobs.prospect map`` (on Ray) once a block is done; the rerun
skips the finished blocks and its store holds the same values as an uninterrupted map."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from engine.errors import LodeInputError
from engine.nets import build
from engine.prospect.score import read_score
from engine.prospect.stack import build_stack, open_stack
from engine.prospect.synth import synth_region, write_region
from engine.prospect.train import default_config, save_checkpoint
from tests.cluster_utils import kill_session

ROOT = Path(__file__).resolve().parents[2]
ARRAYS = ("recon_error", "latent_distance", "prospectivity")


def _job(stack: Path, model: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    cmd = [
        sys.executable,
        "-m",
        "jobs.prospect",
        "map",
        "--stack",
        str(stack),
        "--method",
        "mae",
        "--model",
        str(model),
        "--block",
        "16",
        "--out",
        str(out),
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _done(out: Path) -> list[Path]:
    return sorted((out / "_run" / "_status" / "map").glob("*.json"))


@pytest.mark.slow
def test_sigkilled_map_resumes_to_the_same_store(tmp_path):
    write_region(synth_region(96, seed=5), tmp_path / "r")
    stack = build_stack(tmp_path / "r" / "layers.json", tmp_path / "s.zarr")
    st = open_stack(stack)
    torch.manual_seed(0)
    net = build("mae", **default_config("mae", len(st.channels)))
    latent = {"mean": np.zeros(64, np.float32), "precision": np.eye(64, dtype=np.float32)}
    model = save_checkpoint(tmp_path / "mae.pt", net, "mae", st.channels, latent)
    killed, whole = tmp_path / "killed.zarr", tmp_path / "whole.zarr"

    proc = _job(stack, model, killed)
    try:
        deadline = time.monotonic() + 300
        while not _done(killed) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        kill_session(proc)
    done = {p.name for p in _done(killed)}
    assert 1 <= len(done) < 36, f"{len(done)} blocks done when killed: {proc.stderr.read()[-2000:]}"
    assert zarr.open_group(killed, mode="r", use_consolidated=False).attrs["complete"] is False
    with pytest.raises(LodeInputError, match="partial map"):
        read_score(killed)

    for out in (killed, whole):
        rerun = _job(stack, model, out)
        _, err = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, err[-3000:]
    doc = json.loads((killed / "_run" / "manifest.json").read_text())
    assert doc["status"] == "complete" and doc["attempts"] == 2
    assert doc["skipped_already_done"] == len(done)
    assert done <= {p.name for p in _done(killed)} and len(_done(killed)) == 36
    assert json.loads((whole / "_run" / "manifest.json").read_text())["skipped_already_done"] == 0
    a, b = zarr.open_group(killed, mode="r"), zarr.open_group(whole, mode="r")
    assert a.attrs["complete"] is True and a.attrs["standardisation"] == b.attrs["standardisation"]
    for name in ARRAYS:
        x, y = np.asarray(a[name][:]), np.asarray(b[name][:])
        assert x.tobytes() == y.tobytes(), name
    assert np.isfinite(x).sum() > 0.5 * x.size
