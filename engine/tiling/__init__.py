"""Window grids, output blocks and blend weights (``engine.tiling.blend``, which needs torch)."""

from engine.tiling.grid import Block, PaddedGrid, WindowGrid, auto_block, block_grid, redundancy, window_starts

__all__ = ["Block", "PaddedGrid", "WindowGrid", "auto_block", "block_grid", "redundancy", "window_starts"]
