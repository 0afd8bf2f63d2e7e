"""The one runner: executes a block stage over the units (blocks) of one raster or many.

On Ray: a custom ``Datasource`` yields one read task per pending unit (its block plus halo,
as a one-row Arrow table) → ``map_batches`` runs the stage's compute (a callable class on an
``ActorPoolStrategy`` for model stages, one GPU per actor when the cluster has GPUs; tasks
for light stages) → a ``Datasink`` writes each unit's whole shards and only then records the
unit as done. In serial mode the same stage code runs in this process (tests, tiny inputs).
Once every unit of a raster is done, the stage's ``finish`` marks it complete.

The per-unit record (:class:`~engine.io.manifest.RunManifest`) belongs to the runner: units
already done are skipped on a rerun, a unit whose input is unreadable is recorded as failed
with its reason (its raster fails alone) and is retried by the next run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np

from engine.errors import LodeInputError
from engine.io.manifest import BlockStatus, RunManifest
from engine.raster.grid import Block
from engine.raster.stage import BlockStage, Unit, release_heap

Device = Literal["auto", "cpu", "cuda"]
_UNIT = ("raster", "index", "y0", "x0", "h", "w")


@dataclass(frozen=True)
class RunOptions:
    """How a stage runs.

    Args:
        executor: ``ray`` (the pipeline on the connected cluster) or ``serial`` (in process).
        device: ``auto`` asks for a GPU per model actor when the cluster has GPUs; ``cpu``
            never; ``cuda`` requires them.
        actors: model actors (default: one per cluster GPU, or one on CPU clusters).
        actor_cpus: CPUs an actor reserves (default 1 with a GPU, else 0.5, so that read and
            write tasks are never starved on a small machine).
        max_units: run at most this many pending units (partial runs, benchmarks).
        in_flight: units' worth of data (``size_bytes``) Ray Data may hold in the object store
            per model actor (or per CPU for task stages), to bound read-ahead; ``None`` leaves
            Ray Data's own object-store budget (a share of the object store, flat in the
            number of units).
        remote_args: extra Ray remote arguments for every task and actor (``runtime_env``).
        read_in_compute: a stage computed on the CPU (in its tasks, or in its model actors when they
            have no GPU) reads each unit where it computes it (the read task yields the unit alone),
            so its input never passes through the object store, where each process that touches
            it counts it again. Worth it where a unit's input is much larger than its result and
            its compute much slower than its read: the read cannot run ahead of compute that has
            the cores anyway. Its read tasks then only name units and ask for what the compute
            asks for, and each read block (one unit) is one batch, so that Ray Data fuses the
            reads into the compute: no read task waits for a CPU that another stage holds while
            this stage's compute could run.
            A model actor that reads its own units also writes them (the driver records them as
            done: no write tasks, no worker processes of their own), and takes two at once: it reads
            one while it computes the other. With GPUs, reads always run ahead in tasks.
        compute_threads: units a model actor on the CPU computes side by side, each in a thread of
            its own (the stage's compute must be thread-safe and leave the GIL in its heavy calls):
            one process, and one copy of what ``setup`` built, serves that many units at once. An
            actor that reads its own units then takes that many calls at once (at least two). On a
            GPU an actor computes one unit at a time.
    """

    executor: Literal["ray", "serial"] = "ray"
    device: Device = "auto"
    actors: int | None = None
    actor_cpus: float | None = None
    max_units: int | None = None
    in_flight: int | None = None
    remote_args: dict[str, Any] = field(default_factory=dict)
    read_in_compute: bool = False
    compute_threads: int = 1


@dataclass
class StageRun:
    """What one run of a stage did: units run now, skipped (done before), failed (unit key → reason)."""

    ran: int
    skipped: int
    failed: dict[str, str]
    device: str
    actors: int
    seconds: float


def wants_gpu(stage: BlockStage, device: Device) -> bool:
    """Whether the stage's actors ask for a GPU: decided from the cluster's resources (never
    from this process's own devices). Call with Ray initialised."""
    if not stage.model or device == "cpu":
        return False
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if device == "cuda" and gpus <= 0:
        raise LodeInputError("--device", "cuda was asked for, but the Ray cluster has no GPU")
    return gpus > 0


def local_device(gpu_assigned: bool) -> str:
    """The device a worker uses, decided in its own process: CUDA when Ray gave it a GPU and
    torch sees one there, else the CPU."""
    if gpu_assigned:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def _unit_row(unit: Unit) -> dict[str, Any]:
    b = unit.block
    return {"raster": unit.raster, "index": b.index, "y0": b.y0, "x0": b.x0, "h": b.h, "w": b.w, "error": ""}


def _unit_of(row: dict[str, Any]) -> Unit:
    return Unit(str(row["raster"]), Block(*(int(row[k]) for k in _UNIT[1:])))


def _data(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _UNIT and k != "error"}


def _read_table(stage: BlockStage, unit: Unit, read: bool = True) -> list:
    return [_table(_read(stage, unit) if read else _unit_row(unit))]


def _table(row: dict[str, Any]):
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    cols = {}
    for k, v in row.items():
        if isinstance(v, np.ndarray) and v.ndim > 0:
            cols[k] = ArrowTensorArray.from_numpy(v[None])
        elif isinstance(v, (bytes, bytearray)):
            cols[k] = pa.array([bytes(v)], pa.binary())
        else:
            cols[k] = pa.array([v.item() if isinstance(v, np.generic) else v])
    return pa.table(cols)


def _read(stage: BlockStage, unit: Unit) -> dict[str, Any]:
    row = _unit_row(unit)
    try:
        return {**row, **stage.read(unit)}
    except LodeInputError as exc:
        return {**row, "error": str(exc)}
    finally:
        release_heap()


def _compute(stage: BlockStage, row: dict[str, Any]) -> dict[str, Any]:
    """The stage's compute of ``row``'s unit; ``row`` is emptied first, so the data dict handed to
    the compute holds its inputs alone and the compute can let each go once used."""
    out = {k: row[k] for k in (*_UNIT, "error")}
    if row["error"]:
        return out
    unit = _unit_of(row)
    data = _data(row)
    row.clear()
    t0 = time.perf_counter()
    try:
        result = stage.compute(unit, data)
    except LodeInputError as exc:
        return {**out, "error": str(exc)}
    finally:
        release_heap()
    return {**out, "seconds": time.perf_counter() - t0, **result}


def _write(stage: BlockStage, row: dict[str, Any]) -> dict[str, Any]:
    """``row``'s unit written where it was computed: the row its status record needs (``written``)."""
    out = {k: row[k] for k in (*_UNIT, "error")}
    if row["error"]:
        return out
    data = _data(row)
    seconds = float(data.pop("seconds", 0.0))
    extra = stage.write(_unit_of(row), data) or {}
    release_heap()
    return {**out, "written": True, "windows": int(extra.get("windows", 0)), "seconds": extra.get("seconds", seconds)}


def _commit(stage: BlockStage | None, manifest: RunManifest | None, row: dict[str, Any]) -> None:
    """Write ``row``'s unit (unless it was ``written`` where it was computed; ``stage`` may then be
    ``None``) and record it in ``manifest``: done, or failed with its error."""
    unit = _unit_of(row)
    if row["error"]:
        if manifest is None:
            raise LodeInputError(unit.raster, str(row["error"]))
        manifest.mark_failed(unit.raster, unit.block.key, str(row["error"]))
        return
    data = _data(row)
    seconds = float(data.pop("seconds", 0.0))
    if data.pop("written", False):
        extra = data
    else:
        assert stage is not None
        extra = stage.write(unit, data) or {}
        release_heap()
    if manifest is not None:
        b = unit.block
        manifest.mark_done(
            BlockStatus(
                section=unit.raster,
                key=b.key,
                index=b.index,
                y0=b.y0,
                x0=b.x0,
                h=b.h,
                w=b.w,
                windows=int(extra.get("windows", 0)),
                seconds=float(extra.get("seconds", seconds)),
            )
        )


def _unbatch(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    rows = {len(v) for v in batch.values()}
    if rows != {1}:
        raise RuntimeError(f"a block stage takes one unit per batch, got {rows}")
    return {k: v[0] for k, v in batch.items()}


def _batch(row: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in row.items():
        if isinstance(v, np.ndarray) and v.ndim > 0:
            out[k] = v[None]
        elif isinstance(v, (bytes, bytearray)):
            out[k] = np.array([bytes(v)], dtype=object)
        else:
            out[k] = np.array([v])
    return out


def _calls_at_once(calls: int) -> dict[str, Any]:
    """An actor that takes ``calls`` calls at once (one reads while others compute)."""
    return dict(
        max_tasks_in_flight_per_actor=calls, max_concurrent_calls_per_actor=calls, enable_true_multi_threading=True
    )


class _StageActor:
    """Holds one stage (and its model) in an actor process on the device it picked itself.

    Setup and every compute run in ``threads`` threads of the actor's own (one, one thread team for a
    model's OpenMP, on a GPU). An actor that reads its own units takes calls side by side: one reads
    while the others compute (reads take turns)."""

    def __init__(self, stage: BlockStage, reads: bool = False, threads: int = 1):
        import ray

        self.stage, self.reads = stage, reads
        device = local_device(bool(ray.get_gpu_ids()))
        self._reading = threading.Lock()
        self._computer = ThreadPoolExecutor(threads if device == "cpu" else 1, thread_name_prefix="compute")
        self._computer.submit(stage.setup, device).result()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        row = _unbatch(batch)
        if not self.reads:
            return _batch(self._computer.submit(_compute, self.stage, row).result())
        with self._reading:
            row = _read(self.stage, _unit_of(row))
        return _batch(_write(self.stage, self._computer.submit(_compute, self.stage, row).result()))


def _compute_task(batch: dict[str, np.ndarray], stage: BlockStage, reads: bool = False) -> dict[str, np.ndarray]:
    stage.setup("cpu")
    row = _unbatch(batch)
    if reads:
        row = _read(stage, _unit_of(row))
    return _batch(_compute(stage, row))


def _datasource(stage: BlockStage, units: Sequence[Unit], read: bool = True):
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def _size(u: Unit) -> int:
        return stage.size_bytes(u) if read else 64

    class UnitSource(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return sum(_size(u) for u in units)

        def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
            return [
                ReadTask(
                    partial(_read_table, stage, u, read),
                    BlockMetadata(num_rows=1, size_bytes=_size(u), input_files=None, exec_stats=None),
                    per_task_row_limit=per_task_row_limit,
                )
                for u in units
            ]

        def get_name(self) -> str:
            return f"{type(stage).__name__}Blocks"

    return UnitSource()


def _datasink(stage: BlockStage, manifest: RunManifest | None):
    from ray.data.block import BlockAccessor
    from ray.data.datasource import Datasink

    class ShardSink(Datasink):
        def write(self, blocks: Iterable, ctx) -> None:
            for blk in blocks:
                row: Mapping[str, Any]
                for row in BlockAccessor.for_block(blk).iter_rows(public_row_format=False):
                    _commit(stage, manifest, dict(row))

        def get_name(self) -> str:
            return f"{type(stage).__name__}Shards"

    return ShardSink()


def run_stage(
    stage: BlockStage, units: Sequence[Unit], manifest: RunManifest | None = None, options: RunOptions = RunOptions()
) -> StageRun:
    """Run ``stage`` over ``units`` that ``manifest`` does not record as done.

    Ray must be initialised for the ``ray`` executor. Returns what ran; failed units are in
    ``manifest`` (and in the result), done units are skipped by the next run.
    """
    t0 = time.perf_counter()
    done = manifest.done_keys() if manifest is not None else set()
    pending = [u for u in units if u.key not in done]
    skipped = len(units) - len(pending)
    if options.max_units is not None:
        pending = pending[: options.max_units]
    device, actors = "cpu", 0
    if pending and options.executor == "serial":
        device = "cuda" if options.device == "cuda" else "cpu"
        stage.setup(device)
        for u in pending:
            _commit(stage, manifest, _compute(stage, _read(stage, u)))
    elif pending:
        import ray

        if manifest is None:
            raise ValueError("the ray executor records units in a RunManifest: pass one")
        gpu = wants_gpu(stage, options.device)
        device = "cuda" if gpu else "cpu"
        remote = dict(options.remote_args)
        if stage.model:
            actors = options.actors or (int(ray.cluster_resources().get("GPU", 1)) if gpu else 1)
        reads_here = not gpu and options.read_in_compute
        threads = 1 if gpu else max(1, options.compute_threads)
        calls = _calls_at_once(threads) if threads > 1 else {}
        cpus = options.actor_cpus if options.actor_cpus is not None else (1.0 if gpu else 0.5)
        ds = ray.data.read_datasource(
            _datasource(stage, pending, read=not reads_here),
            override_num_blocks=len(pending),
            **({**remote, "num_cpus": cpus if stage.model else stage.task_cpus} if reads_here else remote),
        )
        if stage.model:
            actor = type(f"{type(stage).__name__}Actor", (_StageActor,), {})  # names the actor processes
            ds = ds.map_batches(
                actor,
                fn_constructor_kwargs={"stage": stage, "reads": reads_here, "threads": threads},
                compute=ray.data.ActorPoolStrategy(
                    size=actors, **(_calls_at_once(max(2, threads)) if reads_here else calls)
                ),
                batch_size=None if reads_here else 1,
                batch_format="numpy",
                num_gpus=1 if gpu else 0,
                num_cpus=cpus,
                **remote,
            )
        else:
            ds = ds.map_batches(
                _compute_task,
                fn_kwargs={"stage": stage, "reads": reads_here},
                batch_size=None if reads_here else 1,
                batch_format="numpy",
                num_cpus=stage.task_cpus,
                **remote,
            )
        ctx = ray.data.DataContext.get_current()
        limits = ctx.execution_options.resource_limits
        if options.in_flight is not None:
            workers = actors or int(ray.cluster_resources().get("CPU", 1))
            budget = options.in_flight * workers * max(stage.size_bytes(u) for u in pending)
            ctx.execution_options.resource_limits = limits.copy(
                object_store_memory=min(limits.object_store_memory, budget)
            )
        try:
            if stage.model and reads_here:  # written in the actors: the driver records their status rows
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    for i in range(len(batch["raster"])):
                        _commit(None, manifest, {k: v[i] for k, v in batch.items()})
            else:
                ds.write_datasink(_datasink(stage, manifest), ray_remote_args={**remote, "num_cpus": stage.task_cpus})
        finally:
            ctx.execution_options.resource_limits = limits
    failed = manifest.failed() if manifest is not None else {}
    finished = manifest.done_keys() if manifest is not None else {u.key for u in pending} | done
    for raster in dict.fromkeys(u.raster for u in units):
        if all(u.key in finished for u in units if u.raster == raster):
            stage.finish(raster)
    return StageRun(
        ran=len(pending), skipped=skipped, failed=failed, device=device, actors=actors, seconds=time.perf_counter() - t0
    )
