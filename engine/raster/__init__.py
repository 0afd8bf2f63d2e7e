"""The one home of raster geometry and execution: shard-aligned blocks, halos, global window
grids, blend kernels, the block-stage protocol and the runner (``engine.raster.runner``)."""

from engine.raster.blend import blend_weights
from engine.raster.grid import (
    Block,
    PaddedGrid,
    WindowGrid,
    auto_block,
    block_grid,
    lattice_offsets,
    lattice_starts,
    redundancy,
    stride_starts,
    window_starts,
)
from engine.raster.stage import BlockStage, Unit, units_of

__all__ = [
    "Block",
    "BlockStage",
    "PaddedGrid",
    "Unit",
    "WindowGrid",
    "auto_block",
    "blend_weights",
    "block_grid",
    "lattice_offsets",
    "lattice_starts",
    "redundancy",
    "stride_starts",
    "units_of",
    "window_starts",
]
