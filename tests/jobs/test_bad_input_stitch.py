"""Bad-input catalogue, stitching: a damaged or unexpected tile fails its section with one line naming
the file (exit 2) while the other sections are stitched; a blank frame is flagged, never "flagged none"."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from jobs.cli import main as lode
from tests.jobs.test_bad_input import earlier_output, fails_naming  # noqa: F401  (fixture)

pytestmark = pytest.mark.ray


def _collection(root: Path, names: tuple[str, ...] = ("secA",), blank: dict | None = None) -> Path:
    from engine.synth.captures import CaptureConfig, capture_grid, write_section

    for seed, name in enumerate(names, 41):
        cfg = CaptureConfig(frame_hw=(160, 220), seed=seed, rows=2, cols=2, blank_frames=(blank or {}).get(name, ()))
        write_section(root, name, capture_grid(None, cfg))
    return root


def _tile(coll: Path, section: str, k: int = 1) -> Path:
    return sorted((coll / section / "tiles").iterdir())[k]


def _argv(coll: Path, store: Path) -> list[str]:
    return ["stitch", str(coll), "--out", str(store), "--shard", "256", "--no-lens", "--no-flat"]


@pytest.mark.parametrize(
    "convert, reason",
    [
        (lambda img: img.astype(np.uint16) * 257, "expected an 8-bit image"),
        (lambda img: cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), "expected 3 colour channels (RGB), got 1"),
        (lambda img: cv2.cvtColor(img, cv2.COLOR_BGR2BGRA), "expected 3 colour channels (RGB), got 4"),
    ],
    ids=["16-bit", "grey", "rgba"],
)
def test_unexpected_tile_formats_are_refused_not_converted(
    tmp_path, ray_session, earlier_output, capsys, convert, reason
):
    coll = _collection(tmp_path / "coll")
    bad = _tile(coll, "secA")
    assert cv2.imwrite(str(bad), convert(cv2.imread(str(bad))))
    store = earlier_output / "pano.zarr"
    fails_naming(_argv(coll, store), bad, capsys, earlier_output, reason)
    assert list(zarr.open_group(str(store), mode="r").groups()) == []


@pytest.mark.slow  # ~20 s; also in the default suite: a corrupt section fails alone (test_fault_tolerance), a
# truncated JPEG is named (test_bad_input), a blank frame is flagged (tests/stitch/test_stitch_section.py)
def test_a_truncated_jpeg_section_fails_alone_and_a_blank_frame_is_flagged(tmp_path, ray_session, capsys):
    coll = _collection(tmp_path / "coll", ("secA", "secB", "secC"), blank={"secA": (3,)})
    png = _tile(coll, "secB")
    ok, jpg = cv2.imencode(".jpg", cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 95])
    bad = png.with_suffix(".jpg")
    bad.write_bytes(jpg.tobytes()[: len(jpg) * 2 // 3])
    png.unlink()
    positions = coll / "secB" / "positions.csv"
    positions.write_text(positions.read_text().replace(png.name, bad.name))
    store = tmp_path / "out.zarr"

    assert lode(_argv(coll, store)) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if "secB" in line or "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith(f"lode stitch: error: {bad}: section secB failed"), err
    assert "truncated" in lines[0] and "Traceback" not in err and "\x1b" not in err

    manifest = json.loads((tmp_path / "out.zarr.manifest.json").read_text())
    units = manifest["units"]
    assert manifest["status"] == "partial" and manifest["error"] in lines[0]
    assert units["secB"]["status"] == "failed" and str(bad) in units["secB"]["reason"]
    assert "\x1b" not in json.dumps(manifest) and "Traceback" not in json.dumps(manifest)
    assert units["secA"]["status"] == units["secC"]["status"] == "done"
    assert units["secA"]["frames_placed"] == 3 and units["secC"]["frames_placed"] == 4
    assert sorted(n for n, _ in zarr.open_group(str(store), mode="r").groups()) == ["secA", "secC"]

    blank = _tile(coll, "secA", 3).name
    report = json.loads((tmp_path / "out.zarr.stitch.json").read_text())["sections"]
    # Without the blank frame, secA's three placed frames form a chain: each one hangs on a single
    # edge and is flagged for it (its position cannot be cross-checked); a full 2×2 (secC) has a loop.
    frames = report["secA"]["frames"]
    assert blank in report["secA"]["flagged"] and report["secC"]["flagged"] == []
    assert frames[3]["flags"][0].startswith("blank")
    others = [f for k, f in enumerate(frames) if k != 3 and f["flags"]]
    assert others and all(any(m.startswith("supported by one edge") for m in f["flags"]) for f in others)
    said = {line.split(":")[0]: line for line in out.splitlines() if line.startswith("sec")}
    assert blank in said["secA"] and said["secC"].endswith("flagged none")
    assert "secB" not in said
