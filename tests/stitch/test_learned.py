"""The optional learned matcher (kornia's LoFTR): weights load from a local file only, its matches
go through the same RANSAC similarity as SIFT's, and bad weights are refused naming the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import LodeInputError
from engine.stitch.register import RegisterOptions, apply, compose, invert, overlap_box, register_pair, translation
from engine.synth.captures import CaptureConfig, capture_grid

HW = (200, 300)
FULL = np.full(HW, 255, np.uint8)


def _pair():
    caps = capture_grid(None, CaptureConfig(rows=1, cols=2, frame_hw=HW, seed=11))
    prior = translation(*(caps.nominal_xy[1] - caps.nominal_xy[0]))
    return caps, prior, compose(invert(caps.transforms[0]), caps.transforms[1])


class _Oracle(torch.nn.Module):
    """Stands in for LoFTR with the pair's true correspondences: a grid over the crop of frame i,
    mapped into the crop of frame j (both in crop coordinates, as LoFTR returns them); every other
    point has confidence 0.1 and a wrong partner."""

    def __init__(self, true_j_to_i: np.ndarray, box_i, box_j):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.true, self.oi, self.oj = true_j_to_i, np.array(box_i[:2], float), np.array(box_j[:2], float)

    def forward(self, data):
        h, w = data["image0"].shape[-2:]
        hj, wj = data["image1"].shape[-2:]
        g = np.stack(np.meshgrid(np.arange(4, w - 4, 9.0), np.arange(4, h - 4, 9.0)), -1).reshape(-1, 2)
        pj = apply(invert(self.true), g + self.oi) - self.oj
        inside = (pj[:, 0] >= 0) & (pj[:, 0] < wj) & (pj[:, 1] >= 0) & (pj[:, 1] < hj)
        g, pj = g[inside], pj[inside]
        conf = np.where(np.arange(len(g)) % 2 == 0, 0.9, 0.1)
        pj[conf < 0.5] = pj[conf < 0.5][::-1]
        return {
            "keypoints0": torch.from_numpy(g.astype(np.float32)),
            "keypoints1": torch.from_numpy(pj.astype(np.float32)),
            "confidence": torch.from_numpy(conf.astype(np.float32)),
        }


def test_learned_matches_are_placed_in_frame_coordinates_filtered_and_fitted_like_sift(monkeypatch, tmp_path):
    import engine.stitch.learned as learned

    caps, prior, true = _pair()
    opts = RegisterOptions(matcher="loftr", matcher_weights=str(tmp_path / "w.pt"))
    box_i = overlap_box(prior, HW, HW, opts.search_margin)
    box_j = overlap_box(invert(prior), HW, HW, opts.search_margin)
    oracle = _Oracle(true, box_i, box_j)
    monkeypatch.setattr(learned, "load_loftr", lambda path, device="cpu": oracle)
    valid_i = FULL.copy()
    valid_i[:, 250:262] = 0  # matches on pixels the sensor did not see are dropped
    e = register_pair(0, 1, caps.frames[0], valid_i, caps.frames[1], FULL, prior, opts)
    assert e.ok and e.method == "features", e.reason
    crop_i = torch.zeros(1, 1, box_i[3] - box_i[1], box_i[2] - box_i[0])
    out = oracle({"image0": crop_i, "image1": torch.zeros(1, 1, box_j[3] - box_j[1], box_j[2] - box_j[0])})
    a = out["keypoints0"].numpy()[out["confidence"].numpy() >= 0.5] + box_i[:2]
    expected = int(((np.rint(a[:, 0]) < 250) | (np.rint(a[:, 0]) >= 262)).sum())
    assert e.matches == expected and e.inliers == expected
    assert not np.any((np.rint(e.all_i[:, 0]) >= 250) & (np.rint(e.all_i[:, 0]) < 262))
    q = np.stack(np.meshgrid(np.arange(0, 300, 25), np.arange(0, 200, 25)), -1).reshape(-1, 2).astype(float)
    assert np.abs(apply(e.M, q) - apply(true, q)).max() < 1e-3


def test_loftr_weights_load_from_a_local_file_exactly_and_run_on_a_pair(tmp_path):
    from kornia.feature import LoFTR

    from engine.stitch.learned import load_loftr, loftr_matches

    torch.manual_seed(0)
    path = tmp_path / "loftr_random.pt"
    saved = LoFTR(pretrained=None).state_dict()
    torch.save({"state_dict": saved}, path)
    net = load_loftr(str(path))
    assert load_loftr(str(path)) is net
    loaded = net.state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    caps, _, _ = _pair()
    grey = [np.ascontiguousarray(f[..., 1]) for f in caps.frames]
    a, b = loftr_matches(net, grey[0], FULL, (150, 20, 300, 180), grey[1], FULL, (0, 20, 150, 180), 0.0)
    with torch.inference_mode():
        direct = net(
            {
                "image0": torch.from_numpy(grey[0][20:180, 150:300] / np.float32(255))[None, None],
                "image1": torch.from_numpy(grey[1][20:180, 0:150] / np.float32(255))[None, None],
            }
        )
    assert a.shape == b.shape == (len(direct["keypoints0"]), 2) and a.dtype == np.float64


def test_weights_that_are_not_loftr_are_refused_naming_the_file(tmp_path):
    from engine.stitch.learned import check_weights, load_loftr

    bad = tmp_path / "not_loftr.pt"
    torch.save({"weight": torch.zeros(3)}, bad)
    with pytest.raises(LodeInputError, match="not LoFTR weights") as err:
        load_loftr(str(bad))
    assert str(bad) in str(err.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(LodeInputError, match="not a torch weights file"):
        load_loftr(str(junk))
    with pytest.raises(LodeInputError, match="no such LoFTR weights file"):
        check_weights(tmp_path / "missing.pt")
    with pytest.raises(LodeInputError, match="--matcher-weights"):
        check_weights(None)


def test_the_stitch_job_refuses_missing_weights_before_writing_anything(tmp_path, capsys):
    from engine.synth.captures import write_section
    from jobs.cli import main as lode

    coll = tmp_path / "coll"
    write_section(coll, "secA", capture_grid(None, CaptureConfig(rows=1, cols=2, frame_hw=(120, 160), seed=3)))
    store = tmp_path / "pano.zarr"
    missing = tmp_path / "loftr.pt"
    argv = ["stitch", str(coll), "--out", str(store), "--no-lens", "--no-flat", "--matcher", "loftr"]
    assert lode([*argv, "--matcher-weights", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert lode(argv) == 2
    assert "--matcher-weights" in capsys.readouterr().err
    foreign = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    assert lode([*argv, "--matcher-weights", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert str(foreign) in err and "not LoFTR weights" in err
    assert not store.exists()


def test_the_default_matcher_never_imports_torch_or_kornia():
    code = (
        "import sys, numpy as np\n"
        "from engine.stitch.register import register_pair, translation\n"
        "from engine.synth.captures import CaptureConfig, capture_grid\n"
        "caps = capture_grid(None, CaptureConfig(rows=1, cols=2, frame_hw=(200, 300), seed=11))\n"
        "full = np.full((200, 300), 255, np.uint8)\n"
        "prior = translation(*(caps.nominal_xy[1] - caps.nominal_xy[0]))\n"
        "assert register_pair(0, 1, caps.frames[0], full, caps.frames[1], full, prior).ok\n"
        "print(sorted(m for m in ('torch', 'kornia') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.ray
def test_a_collection_stitches_with_the_learned_matcher_in_its_ray_tasks(tmp_path, ray_session):
    """Random LoFTR weights find nothing, so every pair says so and falls back to intensities."""
    import json

    from kornia.feature import LoFTR

    from engine.synth.captures import write_section
    from jobs.cli import main as lode
    from jobs.stitch import report_path

    coll = tmp_path / "coll"
    write_section(coll, "secA", capture_grid(None, CaptureConfig(rows=1, cols=2, frame_hw=(160, 220), seed=41)))
    weights = tmp_path / "loftr.pt"
    torch.manual_seed(0)
    torch.save(LoFTR(pretrained=None).state_dict(), weights)
    store = tmp_path / "pano.zarr"
    argv = ["stitch", str(coll), "--out", str(store), "--shard", "256", "--no-lens", "--no-flat"]
    assert lode([*argv, "--matcher", "loftr", "--matcher-weights", str(weights)]) == 0
    report = json.loads(Path(report_path(store)).read_text())
    [edge] = report["sections"]["secA"]["edges"]
    assert edge["registered"] and edge["method"] == "intensity"
    assert "too few LoFTR matches (0)" in edge["reason"]
