"""read_rgb: 8-bit RGB PNGs are decoded once, by PIL, and give OpenCV's pixels; other PNGs keep OpenCV's decode
and its checks."""

import cv2
import numpy as np
import pytest
from PIL import Image

from engine.errors import LodeInputError
from engine.io.images import read_rgb


def _opencv_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)


def test_an_8_bit_rgb_png_reads_as_opencv_decodes_it(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    got = read_rgb(path)
    assert np.array_equal(got, rgb) and np.array_equal(got, _opencv_rgb(path))
    assert got.flags.writeable and got.flags.c_contiguous


def test_a_palette_png_is_expanded_as_opencv_expands_it(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 4, (20, 30, 3), dtype=np.uint8) * 60
    path = tmp_path / "palette.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path)
    assert np.array_equal(read_rgb(path), _opencv_rgb(path))


def test_a_16_bit_rgb_png_is_refused(tmp_path):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.random.default_rng(2).integers(0, 65536, (20, 30, 3), dtype=np.uint16))
    with pytest.raises(LodeInputError, match="8-bit") as err:
        read_rgb(path)
    assert "deep.png" in str(err.value)


def test_a_truncated_png_is_refused(tmp_path):
    path = tmp_path / "cut.png"
    cv2.imwrite(str(path), np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(LodeInputError) as err:
        read_rgb(path)
    assert "cut.png" in str(err.value)
