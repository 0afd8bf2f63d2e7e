"""The segmentation store's root is an NGFF collection, and quantised probabilities state their scale.

The store is written by the segmentation job's own code (plan, store preparation, the block
stage's read → compute → write → finish) run in this process, without Ray: two sections of
different shapes, uint8 probabilities.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from engine.analyze.sections import open_sections
from engine.io.layout import MINERALS, PROBABILITIES, STORE_NAME
from engine.io.ome import PyramidLayout, create_image, dequantise, list_sections, quantisation_of
from engine.raster.grid import block_grid
from engine.raster.stage import Unit
from engine.segment.card import read_card
from engine.segment.pipeline import SegmentOptions, SegmentStage, _prepare_store, plan
from engine.synth import SectionSpec, write_panorama

SHAPES = {"sec-a": (160, 256), "sec-b": (128, 192)}


@pytest.fixture(scope="module")
def segmented(tiny_checkpoint, tmp_path_factory):
    """``(store path, float32 probabilities of sec-a's first block as the model gave them)``."""
    tmp = tmp_path_factory.mktemp("ngff")
    for i, (name, (h, w)) in enumerate(SHAPES.items()):
        write_panorama(
            tmp / "in.zarr",
            name,
            h,
            w,
            SectionSpec(seed=i, grain_diameter=20),
            PyramidLayout((64, 64), chunk=32, levels=2),
        )
    cfg = SegmentOptions(
        inputs=[str(tmp / "in.zarr")],
        out=str(tmp / "out"),
        checkpoint=str(tiny_checkpoint),
        block=(128, 128),
        chunk=64,
        levels=2,
        probabilities="uint8",
    )
    card = read_card(cfg.checkpoint)
    p = plan(cfg, card)
    _prepare_store(cfg, card, p.sources, p.layouts, fresh=True)
    stage = SegmentStage(
        {s.section: s for s in p.sources}, cfg.out, cfg.checkpoint, p.window, p.overlap, 4, "uint8", 1, copy_image=True
    )
    stage.setup("cpu")
    for s in p.sources:
        for b in block_grid(s.height, s.width, p.layouts[s.section].block):
            unit = Unit(s.section, b)
            stage.write(unit, stage.compute(unit, stage.read(unit)))
        stage.finish(s.section)
    first = Unit("sec-a", block_grid(*SHAPES["sec-a"], (128, 128))[0])
    stage.probabilities = "float32"
    exact = stage.compute(first, stage.read(first))["probabilities"]
    return tmp / "out" / STORE_NAME, exact


def test_reader_at_root_finds_every_section_image_and_labels(segmented):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    path, _ = segmented
    store = zarr.open_group(str(path), mode="r")
    nodes = list(Reader(parse_url(str(path)))())
    images = {n.zarr.basename(): n for n in nodes if n.load(Multiscales) and not n.load(Label)}
    labels = {n.zarr.path.rstrip("/").split("/")[-3]: n for n in nodes if n.load(Label)}
    assert set(images) == set(labels) == set(SHAPES)
    for name, (h, w) in SHAPES.items():
        image, label = images[name], labels[name]
        assert [tuple(d.shape) for d in image.data] == [(3, h, w), (3, h // 2, w // 2)]
        assert [a["name"] for a in image.metadata["axes"]] == ["c", "y", "x"]
        assert image.metadata["axes"][1]["unit"] == "micrometer"
        assert image.metadata["channel_names"] == ["R", "G", "B"]
        assert label.zarr.path.rstrip("/").endswith(f"{name}/labels/{MINERALS}")
        assert [tuple(d.shape) for d in label.data] == [(h, w), (h // 2, w // 2)]
        assert np.array_equal(np.asarray(label.data[0]), store[f"{name}/labels/{MINERALS}/0"][:])
        assert np.array_equal(np.asarray(image.data[0]), store[f"{name}/0"][:])
        assert label.metadata["properties"][255]["name"] == "no data"
    assert store.attrs["ome"] == {"version": "0.5", "labels": ["sec-a", "sec-b"]}


def test_project_readers_and_validator_read_the_collection(segmented):
    from ome_zarr_models.v05.image import Image

    path, _ = segmented
    sections = {s.name: s for s in open_sections(path)}
    assert {n: s.shape for n, s in sections.items()} == SHAPES
    assert all(not s.missing for s in sections.values())
    store = zarr.open_group(str(path), mode="r")
    for name in SHAPES:
        Image.from_zarr(store[name])


def test_listing_follows_the_sections_present(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    lay = PyramidLayout((32, 32), 16, 1)
    create_image(root, "b", (1, 32, 32), lay)
    create_image(root, "a", (1, 32, 32), lay)
    root.create_group("_scratch")
    assert list_sections(root) == ["a", "b"]
    create_image(root, "c", (1, 32, 32), lay)
    assert list_sections(root) == ["a", "b", "c"]
    assert zarr.open_group(str(tmp_path / "s.zarr"), mode="r").attrs["ome"]["labels"] == ["a", "b", "c"]


def test_quantised_probabilities_state_scale_and_round_trip(segmented):
    import xarray as xr

    path, exact = segmented
    arr = zarr.open_group(str(path), mode="r")[f"sec-a/{PROBABILITIES}/0"]
    assert arr.dtype == np.uint8
    assert quantisation_of(arr) == (pytest.approx(1 / 255), 0.0)
    h, w = exact.shape[1:]
    got = dequantise(arr, arr[:, :h, :w])
    assert got.dtype == np.float32
    assert np.abs(got - exact).max() <= 0.5 / 255 + 1e-6
    assert np.abs(got.sum(0) - 1).max() <= exact.shape[0] * 0.5 / 255 + 1e-5
    cf = xr.open_zarr(str(path / "sec-a" / PROBABILITIES), consolidated=False, zarr_format=3)["0"]
    assert np.allclose(cf.values[:, :h, :w], got, atol=1e-6)


def test_unstated_quantisation_is_identity(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    img = create_image(root, "a", (2, 32, 32), PyramidLayout((32, 32), 16, 1), dtype=np.float32)
    data = np.linspace(0, 1, 2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32)
    assert quantisation_of(img["0"]) == (1.0, 0.0)
    assert np.array_equal(dequantise(img["0"], data), data)
