import numpy as np
import pytest
import zarr

from engine.classes import LUMENSTONE
from engine.io.ome import PyramidLayout, create_image, create_labels, downsample, write_block


def test_pyramid_levels_are_block_means_and_label_samples(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    lay = PyramidLayout((64, 128), chunk=32, levels=3)
    img = create_image(root, "a", (3, 150, 300), lay)
    lab = create_labels(img, "minerals", LUMENSTONE, lay)
    rng = np.random.default_rng(0)
    full = rng.integers(0, 255, (3, 150, 300), dtype=np.uint8)
    labels = rng.integers(0, 15, (150, 300), dtype=np.uint8)
    for y0 in range(0, 150, 64):
        for x0 in range(0, 300, 128):
            write_block(img, full[:, y0 : y0 + 64, x0 : x0 + 128], y0, x0, "image")
            write_block(lab, labels[y0 : y0 + 64, x0 : x0 + 128], y0, x0, "label")
    assert np.array_equal(img["0"][:], full)
    level1 = ((full.reshape(3, 75, 2, 150, 2).astype(np.int64).sum(axis=(2, 4)) + 2) // 4).astype(np.uint8)
    assert np.array_equal(img["1"][:], level1)
    assert np.array_equal(lab["2"][:], labels[::4, ::4])
    assert img["2"].shape == (3, 38, 75)


def test_write_refuses_blocks_off_the_grid(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    img = create_image(root, "a", (1, 100, 100), PyramidLayout((32, 32), 16, 2))
    with pytest.raises(ValueError, match="block grid"):
        write_block(img, np.zeros((1, 32, 32), np.uint8), 16, 0, "image")
    with pytest.raises(ValueError, match="does not fill"):
        write_block(img, np.zeros((1, 16, 32), np.uint8), 0, 0, "image")


def test_downsample_odd_edges_replicate():
    a = np.arange(9, dtype=np.uint8).reshape(1, 3, 3)
    assert downsample(a, "image").shape == (1, 2, 2)
    assert downsample(a, "image")[0, 1, 1] == 8


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(3, 64, 90), (2, 7, 9), (5, 6)])
def test_downsample_of_integer_images_is_the_2x2_mean_rounded_half_up(dtype, shape):
    """Against the mean written out pixel by pixel, with odd edges repeating their last row/column."""
    a = np.random.default_rng(3).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    h, w = shape[-2:]
    ref = np.empty((*shape[:-2], (h + 1) // 2, (w + 1) // 2), dtype)
    for y in range(ref.shape[-2]):
        for x in range(ref.shape[-1]):
            ys, xs = [2 * y, min(2 * y + 1, h - 1)], [2 * x, min(2 * x + 1, w - 1)]
            total = sum(a[..., yy, xx].astype(np.int64) for yy in ys for xx in xs)
            ref[..., y, x] = (total + 2) // 4
    out = downsample(a, "image")
    assert out.dtype == dtype and np.array_equal(out, ref)


def test_an_image_group_opened_by_its_own_location_is_named_for_it_locally_and_on_fsspec(tmp_path):
    """The segmentation names a section opened directly (``…/panoramas.zarr/secA``) by that location's
    last part, on a local folder and on an fsspec store (before: ``"secA)>"`` from the store's repr)."""
    from zarr.storage import FsspecStore

    from engine.io.ome import group_name, image_groups

    lay = PyramidLayout((64, 64), chunk=32, levels=1)
    for url in (str(tmp_path / "p.zarr"), "memory://lode-names/p.zarr"):
        create_image(zarr.open_group(url, mode="w"), "secA", (3, 40, 50), lay)
        own = zarr.open_group(FsspecStore.from_url(f"{url}/secA") if "://" in url else f"{url}/secA", mode="r")
        assert group_name(own) == "secA"
        assert list(image_groups(own)) == ["secA"]
        assert list(image_groups(zarr.open_group(url, mode="r"))) == ["secA"]
