"""The viewer server's pieces without a browser: Range parsing, seams and flagged frames."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.io.ome import open_store
from engine.view.sections import describe_sections, seams_png
from engine.view.server import parse_range
from tests.analyze.synthetic_sections import write_store


@pytest.mark.parametrize("header, want", [
    ("bytes=0-9", (0, 10)), ("bytes=90-", (90, 100)), ("bytes=-16", (84, 100)), ("bytes=-500", (0, 100)),
    ("bytes=95-200", (95, 100)), ("bytes=100-", None), ("bytes=-0", None), ("bytes=1-2,4-5", None), ("items=0-1", None),
])
def test_parse_range(header, want):
    assert parse_range(header, 100) == want


def test_seams_and_flagged_frames_are_described(tmp_path):
    store = write_store(tmp_path / "s.zarr", {"a": np.zeros((64, 96), np.uint8)}, block=32)
    image = open_store(store, mode="r+")["a"]
    seams = np.zeros((16, 24), np.int16)
    seams[:, 12:] = 1
    image.create_array("seam_labels", data=seams)
    image.attrs["lode"] = {**image.attrs["lode"], "stitch": {"flagged": ["tile_007.png"]}}
    (desc,) = describe_sections(str(store))
    assert desc["seams"]["shape"] == [16, 24] and desc["flagged"] == ["tile_007.png"]
    assert desc["pixel_size_um"] == 0.5 and desc["probabilities"] is None
    assert [lv["shape"] for lv in desc["labels"]["levels"]] == [[64, 96], [32, 48]]
    rgba = np.asarray(Image.open(io.BytesIO(seams_png(str(store), "a"))))
    assert rgba.shape == (16, 24, 4)
    assert set(np.nonzero(rgba[..., 3])[1]) == {11, 12}  # the boundary between the two frames
