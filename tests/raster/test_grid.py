import numpy as np
import pytest
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from engine.raster import WindowGrid, auto_block, block_grid, redundancy, window_starts


@pytest.mark.parametrize(
    "size,window,overlap",
    [(1000, 128, 0.25), (512, 512, 0.5), (513, 512, 0.25), (4096, 512, 0.25), (777, 100, 0.6), (300, 64, 0.0)],
)
def test_window_starts_match_monai(size, window, overlap):
    interval = _get_scan_interval((size,), (window,), 1, (overlap,))
    ref = sorted({s[0].start for s in dense_patch_slices((size,), (window,), interval)})
    assert window_starts(size, window, overlap) == ref


def test_blocks_tile_the_image_exactly():
    blocks = block_grid(1000, 1300, (256, 512))
    cover = np.zeros((1000, 1300), np.int32)
    for b in blocks:
        cover[b.y0 : b.y0 + b.h, b.x0 : b.x0 + b.w] += 1
    assert (cover == 1).all()


def test_touching_windows_cover_block_and_only_touch_it():
    g = WindowGrid(900, 1100, 128, 0.25)
    ys, xs = g.touching(256, 512, 0, 1100)
    assert all(s < 512 and s + 128 > 256 for s in ys)
    assert set(g.ys) - set(ys) == {s for s in g.ys if s >= 512 or s + 128 <= 256}
    assert xs == g.xs


def test_full_width_strips_keep_redundancy_small():
    g = WindowGrid(8000, 12000, 512, 0.25)
    assert auto_block(8000, 12000, 512, shard=2048) == (8192, 12288)
    assert redundancy(g, block_grid(8000, 12000, (8192, 12288))) == 1.0
    halves = auto_block(8000, 12000, 512, shard=2048, max_block_pixels=4096 * 12288)
    assert halves == (8192, 6144)
    assert redundancy(g, block_grid(8000, 12000, halves)) <= 1.04
    strips = auto_block(8000, 12000, 512, shard=2048, target=4096)
    assert strips == (4096, 12288)
    assert redundancy(g, block_grid(8000, 12000, strips)) <= 1.06
    assert auto_block(20000, 12000, 512, shard=2048) == (8192, 12288)
    bounded = auto_block(8000, 12000, 512, shard=4096, max_block_pixels=4096 * 8192)
    assert bounded == (8192, 4096)
    assert redundancy(g, block_grid(8000, 12000, bounded)) <= 1.07
    square = block_grid(8000, 12000, (1024, 1024))
    assert redundancy(g, square) > 1.5
