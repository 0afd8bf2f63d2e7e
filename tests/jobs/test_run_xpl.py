"""``lode run`` with crossed-polar captures: a model that takes XPL channels segments each section's
PPL panorama stacked with its XPL panoramas (stitched with the PPL transforms, refined); a section
without ``xpl/`` fails alone, naming its folder; a PPL-only model ignores ``xpl/`` with a note."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from engine.io.layout import STORE_NAME
from engine.synth.captures import CaptureConfig, calibration_frames, capture_grid, write_calibration, write_section
from engine.synth.xpl import s3_lookalike_spec
from engine.synth.xpl_captures import XplCaptureConfig, capture_xpl_section, write_xpl_section
from jobs import run as run_job_module
from jobs.contract import parse, run_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a lode run each (stitch, XPL, segment, analyze): 40-70 s
CHANNELS = ["R", "G", "B", "XPL000", "XPL045"]


def _lode(*argv: str | Path) -> int:
    return run_job(run_job_module.JOB, parse(run_job_module.JOB, [str(a) for a in argv]))


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """``withxpl``: 2×2 degraded frames of an S3 look-alike section with XPL captures at 0° and 45°;
    ``noxpl``: the same camera, no ``xpl/``; the collection's raw calibration frames."""
    root = tmp_path_factory.mktemp("runxpl") / "coll"
    cfg = CaptureConfig.degraded(frame_hw=(160, 240), seed=51, rows=2, cols=2)
    caps = capture_xpl_section(s3_lookalike_spec(12), cfg, XplCaptureConfig(angles=(0.0, 45.0), seed=5))
    write_xpl_section(root, "withxpl", caps)
    write_section(
        root, "noxpl", capture_grid(None, CaptureConfig.degraded(frame_hw=(160, 240), seed=52, rows=2, cols=2))
    )
    write_calibration(root, calibration_frames(cfg))
    return root


@pytest.fixture(scope="module")
def xpl_checkpoint(tmp_path_factory) -> Path:
    """An untrained UNet-ResNet18 over PPL RGB and XPL at 0° and 45°, window 128."""
    import torch

    from engine.classes import LUMENSTONE
    from engine.nets import build
    from engine.segment.checkpoint import ModelCard, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "xpl.pt"
    model = build("unet", encoder="resnet18", in_channels=len(CHANNELS), classes=len(LUMENSTONE))
    card = ModelCard(
        arch="unet",
        encoder="resnet18",
        classes=LUMENSTONE.to_dicts(),
        in_channels=len(CHANNELS),
        channels=CHANNELS,
        mean=[0.45, 0.42, 0.40, 0.1, 0.1],
        std=[0.25, 0.24, 0.26, 0.1, 0.1],
        window=128,
        overlap=0.25,
    )
    save_checkpoint(path, model, card)
    return path


def test_xpl_model_segments_stacked_channels_and_a_section_without_xpl_fails_alone(
    ray_session, collection, xpl_checkpoint, tmp_path, capsys
):
    out = tmp_path / "out"
    assert _lode(collection, "--model", xpl_checkpoint, "--out", out, "--shard", "256") == 2
    err = capsys.readouterr().err
    assert "section noxpl failed" in err and str(collection / "noxpl" / "xpl") in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "partial"
    units = manifest["units"]
    assert [units["withxpl"][s]["status"] for s in ("stitch", "segment", "analyze")] == ["done"] * 3
    assert units["noxpl"]["stitch"]["status"] == "done" and units["noxpl"]["segment"]["status"] == "failed"
    assert str(collection / "noxpl" / "xpl") in units["noxpl"]["segment"]["reason"]

    root = zarr.open_group(str(out / STORE_NAME), mode="r")
    assert "noxpl" not in root
    img = np.asarray(root["withxpl/0"][...])
    assert img.shape[0] == len(CHANNELS)
    assert [c["label"] for c in root["withxpl"].attrs["ome"]["omero"]["channels"]] == CHANNELS
    work = out / ".lode-run"
    ppl = np.asarray(zarr.open_group(str(work / "panoramas.zarr"), mode="r")["withxpl/0"][...])
    assert np.array_equal(img[:3], ppl)
    stacked = zarr.open_group(str(work / "xpl.zarr"), mode="r")["withxpl"]
    for c, angle in enumerate(("000", "045"), start=3):
        rgb = np.asarray(stacked[f"xpl/{angle}/0"][...]).transpose(1, 2, 0)
        assert np.array_equal(img[c], cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))
        assert not np.array_equal(
            img[c], cv2.cvtColor(np.ascontiguousarray(ppl.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)
        )
    xpl = root["withxpl"].attrs["lode"]["stitch"]["xpl"]
    assert xpl["angles"] == ["000", "045"] and xpl["channels"] == CHANNELS[3:]
    truth = XplCaptureConfig().offset_px  # how far the synthetic XPL captures sit off the PPL frames
    assert abs(xpl["max_shift_px"] - truth) < 0.3, (xpl["max_shift_px"], truth)
    assert xpl["residual_px"] < 1.5
    assert set(xpl["refinement"]) == {"000", "045"}


def test_ppl_model_ignores_xpl_with_a_note(ray_session, collection, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _lode(collection, "--model", tiny_checkpoint, "--out", out, "--shard", "256") == 0
    notes = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "withxpl" in notes[0] and "XPL ignored" in notes[0]
    root = zarr.open_group(str(out / STORE_NAME), mode="r")
    for name in ("withxpl", "noxpl"):
        assert root[f"{name}/0"].shape[0] == 3 and "xpl" not in root[name].attrs["lode"]["stitch"]
    assert not (out / ".lode-run" / "xpl.zarr").exists()
