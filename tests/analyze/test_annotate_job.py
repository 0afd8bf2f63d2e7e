import json

import cv2
import numpy as np
import pytest

from jobs import annotate
from jobs.cli import main as lode

from .synthetic_sections import colour_image, gaussian_colour_model, place_grains, scribbles_for, write_store


def _args(*argv: str):
    """The validated config ``run`` receives."""
    return annotate.JOB.validate(annotate.JOB.parser().parse_args(list(argv)))


def test_expand_from_files(tmp_path):
    from engine.classes import LUMENSTONE

    truth = place_grains((192, 256), [1, 2, 6], 20, seed=1).labels
    rgb = colour_image(truth, LUMENSTONE, seed=1, noise=10).transpose(1, 2, 0)
    cv2.imwrite(str(tmp_path / "img.png"), rgb[..., ::-1])
    cv2.imwrite(str(tmp_path / "scr.png"), scribbles_for(truth, 1, grain_share=1.0))
    out = tmp_path / "labels.png"
    assert (
        annotate.run(
            _args(
                "expand",
                "--image",
                str(tmp_path / "img.png"),
                "--scribbles",
                str(tmp_path / "scr.png"),
                "--out",
                str(out),
            )
        )
        == 0
    )
    labels = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert labels.shape == truth.shape and (labels == truth).mean() >= 0.9


def test_expand_rejects_badscribbles_for(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "scr.png"), np.full((20, 31), 255, np.uint8))
    args = (
        "annotate",
        "expand",
        "--image",
        str(tmp_path / "img.png"),
        "--scribbles",
        str(tmp_path / "scr.png"),
        "--out",
        str(tmp_path / "o.png"),
    )
    assert lode(list(args)) == 2
    assert "scr.png" in capsys.readouterr().err
    bad = np.full((20, 30), 255, np.uint8)
    bad[3, 3] = 99
    cv2.imwrite(str(tmp_path / "scr.png"), bad)
    assert lode(list(args)) == 2
    assert "unknown class codes [99]" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_uncertain_from_store(tmp_path):
    truth = place_grains((256, 384), [1, 2, 5, 6, 8], 40, seed=5).labels
    img, prob, pred = gaussian_colour_model(truth, 5)
    codes = [0, 1, 2, 5, 6, 8]
    from engine.classes import ClassSet

    classes = ClassSet.from_codes(codes)
    store = write_store(tmp_path / "seg.zarr", {"a": pred}, classes=classes, probabilities={"a": prob})
    assert annotate.run(_args("uncertain", str(store), "--share", "0.1", "--out", str(tmp_path))) == 0
    doc = json.loads((tmp_path / "uncertain_a.json").read_text())
    mask = cv2.imread(str(tmp_path / "uncertain_a.png"), cv2.IMREAD_UNCHANGED) > 0
    assert doc["downsample"] == 1 and doc["share"] == pytest.approx(mask.mean())
    assert mask.mean() <= 0.1 and len(doc["regions"]) > 10
    wrong = pred != truth
    assert (wrong & mask).sum() / wrong.sum() >= 0.5
    scores = [r["score"] for r in doc["regions"]]
    assert scores == sorted(scores, reverse=True)
    y0, x0, y1, x1 = doc["regions"][0]["bbox_level0"]
    assert mask[y0:y1, x0:x1].any()
