"""Segmentation and analysis with every input and output in S3 (moto's local server): an
interrupted segmentation to S3 resumes, and its labels and the analysis tables equal a local-path
run of the same jobs byte for byte; Ray workers get the endpoint and credentials from the driver's
environment; an unwritable bucket fails before any work."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
import s3fs
import zarr

from engine.io import fs
from engine.io.ome import PyramidLayout
from engine.segment.pipeline import STORE_NAME
from engine.synth import SectionSpec, write_panorama
from jobs.cli import main as lode

BUCKET = "s3://lode-test"
SEGMENT = ["--block", "128", "128", "--batch-size", "4"]


@pytest.fixture(scope="module")
def panorama(tmp_path_factory):
    """A 160×256 section (4 blocks of 128) stored as OME-Zarr."""
    store = tmp_path_factory.mktemp("s3pano") / "in.zarr"
    write_panorama(
        store, "sec-a", 160, 256, SectionSpec(seed=7, grain_diameter=24), PyramidLayout((128, 128), chunk=64, levels=2)
    )
    return store


@pytest.fixture(scope="module")
def local_run(panorama, tiny_checkpoint, tmp_path_factory, ray_session):
    """The same segmentation and analysis with local paths: the reference."""
    out = tmp_path_factory.mktemp("local") / "seg"
    assert lode(["segment", str(panorama), "--checkpoint", str(tiny_checkpoint), "--out", str(out), *SEGMENT]) == 0
    assert lode(["analyze", str(out / STORE_NAME), "--out", str(out / "analysis"), "--no-report"]) == 0
    return out


@pytest.fixture(scope="module")
def s3_inputs(s3, panorama, tiny_checkpoint):
    s3fs.S3FileSystem().put(str(panorama), "lode-test/in.zarr", recursive=True)
    s3fs.S3FileSystem().put_file(str(tiny_checkpoint), "lode-test/model/tiny.pt")
    return f"{BUCKET}/in.zarr", f"{BUCKET}/model/tiny.pt"


def _labels(out: str) -> dict[str, bytes]:
    group = zarr.open_group(fs.join(out, STORE_NAME, "sec-a"), mode="r")
    return {k: group[k][:].tobytes() for k in ("0", "1", "labels/minerals/0", "labels/minerals/1")}


def _table(path: str):
    filesystem, inner = fs.arrow_filesystem(path)
    return pq.read_table(inner, filesystem=filesystem)


def test_ray_workers_get_the_object_store_settings_of_the_driver(ray_session, s3):
    import ray

    def endpoint() -> str | None:
        return os.environ.get("AWS_ENDPOINT_URL")

    # the local Ray was started before the endpoint was set, as on a cluster
    assert ray.get(ray.remote(endpoint).remote()) != s3
    assert ray.get(ray.remote(endpoint).options(**fs.ray_remote_args()).remote()) == s3


_INHERITED = """
import os
import ray
from engine.io import fs
from engine.runtime import init_ray

def endpoint():
    return os.environ.get("AWS_ENDPOINT_URL")

os.environ["AWS_ENDPOINT_URL"] = "http://one"
init_ray(num_cpus=1)
assert fs.ray_remote_args() == {}, fs.ray_remote_args()
assert ray.get(ray.remote(endpoint).options(**fs.ray_remote_args()).remote()) == "http://one"
os.environ["AWS_ENDPOINT_URL"] = "http://two"
assert fs.ray_remote_args() == {"runtime_env": {"env_vars": {"AWS_ENDPOINT_URL": "http://two"}}}
assert ray.get(ray.remote(endpoint).options(**fs.ray_remote_args()).remote()) == "http://two"
"""


def test_workers_of_the_cluster_a_job_started_inherit_its_settings_and_get_later_changes():
    """No runtime environment for the settings that the workers of the job's own local cluster inherited
    (Ray would start workers of their own for one, seconds each); a setting changed since reaches them."""
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(fs.ENV_PREFIXES) and k != "RAY_ADDRESS"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _INHERITED], env=env, cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_segment_to_s3_resumes_after_an_interruption_and_with_analyze_equals_the_local_run(local_run, s3_inputs):
    store, checkpoint = s3_inputs
    out = f"{BUCKET}/runs/seg"
    argv = ["segment", store, "--checkpoint", checkpoint, "--out", out, *SEGMENT]
    assert lode([*argv, "--max-blocks", "2"]) == 0
    markers = fs.glob(f"{out}/_status/sec-a/*.json")
    assert len(markers) == 2
    # a crash after a block's shards were written but before its commit marker: the block is redone
    fs.remove(markers[0])
    assert lode(argv) == 0
    manifest = json.loads(fs.read_bytes(f"{out}/manifest.json"))
    assert manifest["status"] == "complete" and manifest["skipped_already_done"] == 1
    assert manifest["attempts"] == 2 and len(manifest["blocks"]) == 4
    assert all(b["status"] == "done" for b in manifest["blocks"])
    assert _labels(out) == _labels(str(local_run))

    analysis = f"{BUCKET}/runs/analysis"
    assert lode(["analyze", f"{out}/{STORE_NAME}", "--out", analysis]) == 0
    for table in ("grains.parquet", "statistics.parquet"):
        got, want = _table(f"{analysis}/{table}"), _table(str(local_run / "analysis" / table))
        assert got.num_rows > 0 and got.equals(want), table
    report = fs.read_bytes(f"{analysis}/report.html").decode()
    assert "Section sec-a" in report and fs.exists(f"{analysis}/composition.png")
    assert json.loads(fs.read_bytes(f"{analysis}/manifest.json"))["status"] == "complete"


def test_unwritable_bucket_fails_before_any_work(s3, panorama, tiny_checkpoint, capsys):
    out = "s3://no-such-bucket/run1"
    assert lode(["segment", str(panorama), "--checkpoint", str(tiny_checkpoint), "--out", out]) == 2
    err = capsys.readouterr().err
    assert out in err and "not writable" in err
    assert not s3fs.S3FileSystem().exists("lode-test/run1")
