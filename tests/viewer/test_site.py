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


@pytest.mark.parametrize(
    "header, want",
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=90-", (90, 100)),
        ("bytes=-16", (84, 100)),
        ("bytes=-500", (0, 100)),
        ("bytes=95-200", (95, 100)),
        ("bytes=100-", None),
        ("bytes=-0", None),
        ("bytes=1-2,4-5", None),
        ("items=0-1", None),
    ],
)
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


def test_a_store_behind_an_fsspec_uri_is_served_by_range(tmp_path):
    import json
    import urllib.request

    import fsspec

    from engine.view.server import ViewServer
    from engine.view.site import Site

    uri = "memory://viewer-test/run/lode.ome.zarr"
    write_store(uri, {"a": (np.arange(64 * 64).reshape(64, 64) % 3).astype(np.uint8)}, block=32)
    lines: list[str] = []
    server = ViewServer(Site("memory://viewer-test/run"), 0, lines.append).start()
    try:
        manifest = json.loads(urllib.request.urlopen(server.url + "api/manifest.json", timeout=10).read())
        assert [s["name"] for s in manifest["sections"]] == ["a"]
        whole = fsspec.filesystem("memory").cat_file("/viewer-test/run/lode.ome.zarr/a/labels/minerals/0/c/0/0")
        req = urllib.request.Request(server.url + "store/a/labels/minerals/0/c/0/0", headers={"Range": "bytes=-20"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 206 and r.read() == whole[-20:]
        assert lines[-1].endswith("206 20") and "bytes=-20" in lines[-1]
    finally:
        server.stop()
        fsspec.filesystem("memory").rm("/viewer-test", recursive=True)
