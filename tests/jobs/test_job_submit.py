"""``ray job submit`` of jobs.segment to a private local head node."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr

from engine.segment.checkpoint import load_checkpoint
from tests.cluster_utils import RAY, cluster_env
from tests.conftest import monai_reference

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]


def test_segment_job_via_ray_job_submit(ray_head, small_panorama, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            ray_head,
            "--runtime-env",
            str(ROOT / "cluster/runtime_env.yaml"),
            "--working-dir",
            str(ROOT),
            "--",
            "python",
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
        ],
        env=cluster_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in (r.stdout + r.stderr).lower()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["blocks"]) == 12
    labels = zarr.open_group(str(out / "lode.ome.zarr"), mode="r")["sec-a/labels/minerals/0"][:]
    _, card = load_checkpoint(tiny_checkpoint)
    codes = np.array(card.class_set().codes)
    assert np.array_equal(
        labels, codes[monai_reference(small_panorama, "sec-a", tiny_checkpoint, program=True).argmax(0)]
    )
