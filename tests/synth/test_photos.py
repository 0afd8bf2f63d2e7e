import numpy as np

from engine.synth.photos import CELL, PHOTOS, photo_cells, photo_mosaic


def test_mosaic_is_seeded_and_built_from_the_bundled_photographs():
    cells = photo_cells()
    assert len(cells) >= len(PHOTOS) and all(c.shape == (CELL, CELL, 3) and c.dtype == np.uint8 for c in cells)
    a = photo_mosaic((700, 1300), seed=1, blur_px=0)
    assert a.shape == (700, 1300, 3) and np.array_equal(a, photo_mosaic((700, 1300), seed=1, blur_px=0))
    assert not np.array_equal(a, photo_mosaic((700, 1300), seed=2, blur_px=0))
    top_left = a[:CELL, :CELL]
    assert any(np.array_equal(top_left, c[::sy, ::sx]) for c in cells for sy in (1, -1) for sx in (1, -1))
