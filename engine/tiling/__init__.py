"""Window grids, output blocks and blend weights."""

from engine.tiling.blend import gaussian_weights
from engine.tiling.grid import Block, WindowGrid, auto_block, block_grid, redundancy, window_starts

__all__ = ["Block", "WindowGrid", "auto_block", "block_grid", "gaussian_weights", "redundancy", "window_starts"]
