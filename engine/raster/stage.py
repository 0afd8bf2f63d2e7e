"""The block-stage protocol: read a block plus its halo → compute → write the block's whole shards.

A stage is a small picklable object that the runner ships to Ray workers (or calls in
process, in serial mode). Keep heavy state out of ``__init__``: a model is built in
:meth:`BlockStage.setup`, once per actor, on the device the actor picked in its own process.
"""

from __future__ import annotations

import ctypes
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.raster.grid import Block


@dataclass(frozen=True)
class Unit:
    """One output block of one raster: the unit of parallel work, resume and failure."""

    raster: str
    block: Block

    @property
    def key(self) -> str:
        return f"{self.raster}/{self.block.key}"


def units_of(raster: str, blocks: list[Block]) -> list[Unit]:
    return [Unit(raster, b) for b in blocks]


class BlockStage(ABC):
    """Base class of every blocked stage.

    Subclasses set ``name`` and ``model`` and implement :meth:`read`, :meth:`compute` and
    :meth:`write`. ``read`` and ``write`` run in CPU tasks (writes of ``task_cpus`` CPUs each);
    ``compute`` runs on an actor pool when ``model`` is true (one GPU per actor when the cluster
    has GPUs), else in tasks of ``task_cpus`` CPUs each (a stage whose compute holds much memory
    asks for a whole CPU, so that no more of them run at once than there are cores).
    Values passed between the three are numpy arrays, numbers, strings or bytes.
    """

    name: ClassVar[str] = "stage"
    model: ClassVar[bool] = False
    task_cpus: ClassVar[float] = 0.5

    @abstractmethod
    def read(self, unit: Unit) -> dict[str, Any]:
        """The unit's inputs (block plus halo). Raise ``LodeInputError`` for unreadable input:
        that raster then fails alone, the others go on."""

    def setup(self, device: str) -> None:  # noqa: B027 - an optional hook: most stages need no setup
        """Build heavy state (a model) on ``device`` (``cpu`` or ``cuda``); once per process."""

    def compute(self, unit: Unit, data: dict[str, Any]) -> dict[str, Any]:
        """The unit's result from what :meth:`read` returned; ``data`` is the compute's own (the runner
        keeps no other reference), so it may pop inputs and let them go once used."""
        return data

    @abstractmethod
    def write(self, unit: Unit, result: dict[str, Any]) -> dict[str, Any]:
        """Write the unit's whole shards; returns fields for its status record (``windows``,
        ``seconds``). The unit is marked done only after this returns."""

    def finish(self, raster: str) -> None:  # noqa: B027 - an optional hook
        """Called at the driver once every unit of ``raster`` is done (also on a rerun that found
        them all done): mark the raster complete, build what needs the whole of it."""

    def size_bytes(self, unit: Unit) -> int:
        """Estimated bytes of the unit's inputs (Ray Data plans its memory from it)."""
        return unit.block.h * unit.block.w * 4


def release_heap() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise), so that a long-lived worker holds
    one unit's memory only while it works on it. The runner calls it after each read, compute and write."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def own_pages_for_large_blocks(nbytes: int = 16 << 20) -> None:
    """Give every allocation of ``nbytes`` or more pages of its own, returned to the OS when freed.
    glibc otherwise raises this threshold to the largest block freed (up to 32 MiB) and serves such
    blocks from its heap, which a process allocating box-sized arrays unit after unit leaves
    fragmented: 12 stitch shards rendered in one process kept 130-170 MB more after each than
    before the first, and their peaks grew from 610 to 730 MB (550 with this), for about 15 % more
    time (fresh pages are faulted in). Process-wide and for good: a stage calls it from ``setup``."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
