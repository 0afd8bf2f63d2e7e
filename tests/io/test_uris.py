"""Inputs as fsspec URIs (file://, memory://), outputs as file:// URIs. Object stores (S3):
tests/io/test_object_store.py and tests/jobs/test_uri_jobs.py."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
import zarr

from engine.io.sources import discover
from jobs.cli import main as lode


def test_zarr_store_from_the_memory_filesystem_reads_the_same_pixels(small_panorama):
    fs = fsspec.filesystem("memory")
    fs.put(str(small_panorama), "/uri-test/in.zarr", recursive=True)
    (src,) = discover(["memory:///uri-test/in.zarr"])
    assert (src.section, src.height, src.width, src.channels) == ("sec-a", 300, 420, 3)
    want = zarr.open_group(str(small_panorama), mode="r")["sec-a/0"][:, 40:200, 100:300]
    assert np.array_equal(src.read(40, 200, 100, 300), want)
    with pytest.raises(Exception, match="memory:///uri-test/missing.zarr"):
        discover(["memory:///uri-test/missing.zarr"])


@pytest.mark.ray
@pytest.mark.slow
def test_segment_job_reads_and_writes_file_uris(small_panorama, tiny_checkpoint, tmp_path, monkeypatch):
    from engine.segment.checkpoint import load_checkpoint
    from tests.conftest import monai_reference

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert (
        lode(
            [
                "segment",
                f"file://{small_panorama}",
                "--out",
                f"file://{tmp_path / 'run'}",
                "--checkpoint",
                str(tiny_checkpoint),
                "--block",
                "128",
                "128",
            ]
        )
        == 0
    )
    labels = zarr.open_group(str(tmp_path / "run" / "lode.ome.zarr"), mode="r")["sec-a/labels/minerals/0"][:]
    codes = np.array(load_checkpoint(tiny_checkpoint)[1].class_set().codes)
    assert np.array_equal(labels, codes[monai_reference(small_panorama, "sec-a", tiny_checkpoint).argmax(0)])
