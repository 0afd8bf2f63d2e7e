"""The Ray Data segmentation job: equality with a global sliding window, NGFF output, resume, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from engine.errors import LodeInputError
from engine.segment.checkpoint import load_checkpoint
from engine.segment.pipeline import STORE_NAME, SegmentOptions, run_segmentation
from tests.conftest import monai_reference

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def segmented(ray_session, small_panorama, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "run"
    cfg = SegmentOptions(
        inputs=[str(small_panorama)],
        out=str(out),
        checkpoint=str(tiny_checkpoint),
        block=(128, 128),
        chunk=64,
        levels=2,
        probabilities="float32",
    )
    manifest = run_segmentation(cfg)
    return out, manifest


def test_engine_equals_global_sliding_window(segmented, small_panorama, tiny_checkpoint):
    out, manifest = segmented
    ref = monai_reference(small_panorama, "sec-a", tiny_checkpoint)
    ref_program = monai_reference(small_panorama, "sec-a", tiny_checkpoint, program=True)
    store = zarr.open_group(str(out / STORE_NAME), mode="r")
    probs = store["sec-a/probabilities/0"][:]
    labels = store["sec-a/labels/minerals/0"][:]
    _, card = load_checkpoint(tiny_checkpoint)
    codes = np.array(card.class_set().codes)
    assert np.abs(probs - ref).max() <= 1e-4
    assert np.abs(probs - ref_program).max() <= 1e-5
    assert np.array_equal(labels, codes[ref_program.argmax(0)])
    assert manifest["status"] == "complete"
    assert len(manifest["blocks"]) == 3 * 4 and all(b["status"] == "done" for b in manifest["blocks"])
    assert np.array_equal(store["sec-a/0"][:], zarr.open_group(str(small_panorama), mode="r")["sec-a/0"][:])


def test_store_opens_with_independent_ome_zarr_reader(segmented):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out, _ = segmented
    nodes = list(Reader(parse_url(str(out / STORE_NAME / "sec-a")))())
    image = nodes[0]
    assert [tuple(d.shape) for d in image.data] == [(3, 300, 420), (3, 150, 210)]
    label = next(n for n in nodes if n.metadata.get("color"))
    assert [tuple(d.shape) for d in label.data] == [(300, 420), (150, 210)]
    colors = label.metadata["color"]
    assert colors[6] == pytest.approx([250 / 255, 250 / 255, 120 / 255, 1.0])
    assert label.metadata["properties"][6]["name"] == "pyrite"
    assert label.metadata["properties"][0]["name"] == "background"


def test_interrupted_run_resumes_byte_identical(segmented, small_panorama, tiny_checkpoint, tmp_path):
    ref_out, _ = segmented
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
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = out / "_status" / "sec-a"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (status.exists() and any(status.iterdir())):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.stem for p in status.glob("*.json")}
    assert 0 < len(done_before) < 12, "the run should have been killed part-way"

    cfg = SegmentOptions(
        inputs=[str(small_panorama)],
        out=str(out),
        checkpoint=str(tiny_checkpoint),
        block=(128, 128),
        chunk=64,
        levels=2,
        probabilities="float32",
    )
    # the killed run used the job's default chunk/levels; a rerun with another layout is refused
    with pytest.raises(LodeInputError, match="another model, inputs or layout"):
        run_segmentation(cfg)
    cfg = replace(cfg, chunk=512, levels=3)
    manifest = run_segmentation(cfg)
    assert manifest["status"] == "complete"
    assert manifest["skipped_already_done"] == len(done_before)
    ref_cfg_out = ref_out / STORE_NAME
    got = zarr.open_group(str(out / STORE_NAME), mode="r")["sec-a/labels/minerals/0"][:]
    want = zarr.open_group(str(ref_cfg_out), mode="r")["sec-a/labels/minerals/0"][:]
    assert got.tobytes() == want.tobytes()


def test_a_run_killed_after_its_last_block_is_completed_by_the_rerun(
    segmented, small_panorama, tiny_checkpoint, tmp_path
):
    """Killed between its last block's write and marking the section complete, a run leaves every block done
    and the section incomplete; the rerun has no block to run and must still mark it complete."""
    import shutil

    from engine.io.integrity import is_complete, mark_complete

    ref_out, _ = segmented
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    root = zarr.open_group(str(out / STORE_NAME), mode="r+")
    for group in (root["sec-a"], root["sec-a/labels/minerals"]):
        mark_complete(group, False)
    cfg = SegmentOptions(
        inputs=[str(small_panorama)],
        out=str(out),
        checkpoint=str(tiny_checkpoint),
        block=(128, 128),
        chunk=64,
        levels=2,
        probabilities="float32",
    )
    manifest = run_segmentation(cfg)
    assert manifest["status"] == "complete" and manifest["skipped_already_done"] == 12
    root = zarr.open_group(str(out / STORE_NAME), mode="r")
    assert is_complete(root["sec-a"]) and is_complete(root["sec-a/labels/minerals"])


def test_missing_input_names_it(tiny_checkpoint, tmp_path):
    cfg = SegmentOptions(inputs=[str(tmp_path / "nope.zarr")], out=str(tmp_path / "o"), checkpoint=str(tiny_checkpoint))
    with pytest.raises(LodeInputError, match="nope.zarr"):
        run_segmentation(cfg)


def test_grey_image_is_refused_with_its_name(tiny_checkpoint, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "grey.png"), np.zeros((200, 200), np.uint8))
    cfg = SegmentOptions(inputs=[str(folder)], out=str(tmp_path / "o"), checkpoint=str(tiny_checkpoint))
    with pytest.raises(LodeInputError, match=r"grey\.png.*1 channels"):
        run_segmentation(cfg)
    assert not (tmp_path / "o" / "_status").exists()


def test_unreadable_image_is_refused_with_its_name(tiny_checkpoint, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cfg = SegmentOptions(inputs=[str(folder)], out=str(tmp_path / "o"), checkpoint=str(tiny_checkpoint))
    with pytest.raises(LodeInputError, match=r"broken\.jpg"):
        run_segmentation(cfg)


def test_truncated_jpeg_fails_and_leaves_no_block_done(ray_session, tiny_checkpoint, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", rgb)
    (folder / "cut.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    cfg = SegmentOptions(
        inputs=[str(folder)],
        out=str(tmp_path / "o"),
        checkpoint=str(tiny_checkpoint),
        block=(128, 128),
        chunk=64,
        levels=2,
    )
    with pytest.raises(LodeInputError, match=r"cut\.jpg.*truncated"):
        run_segmentation(cfg)
    assert not list((tmp_path / "o").glob("_status/*/*.json"))
    assert not (tmp_path / "o" / "manifest.json").exists()
