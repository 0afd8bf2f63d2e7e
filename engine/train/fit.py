"""One fit-and-export path for every network Lode trains: the segmentation model, the lineament
U-Net and the prospectivity MAE and conv-AE.

A training loop is a function ``loop(config, ctx)`` that trains in epochs. At the end of each it
calls ``ctx.report(metrics, write)``; on rank 0, ``write(folder)`` puts the epoch's checkpoint in
``folder``: ``model.pt`` and ``state.pt`` (optimizer, epoch, history: what a resumed run needs,
see :func:`save_state`). :func:`fit` runs the loop

- on Ray Train (``executor="ray"``): a ``TorchTrainer`` of N workers (DDP), GPUs asked for from the
  cluster's resources (:mod:`engine.train.scaling`), each worker on the device Ray gave it;
- or in this process (``executor="local"``), one worker, for tests and small jobs.

Either way ``<out>/last/`` holds the latest checkpoint (replaced whole as each epoch ends, so a
killed run resumes from it), ``<out>/model.pt`` the best (by ``FitSpec.best``, else the latest),
``curves.csv``/``curves.png`` the history and ``train_metrics.json`` the final metrics.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from engine.errors import LodeInputError
from engine.io.atomic import atomic_copy, atomic_path, atomic_write_text, staged_directory
from engine.io.torchfile import entries, load_torch

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "model.pt"
STATE_NAME = "state.pt"
Writer = Callable[[Path], None]


class Context(Protocol):
    """What a training loop sees of where it runs."""

    world: int
    rank: int

    @property
    def device(self) -> torch.device: ...

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on this worker's device, wrapped for DDP when there are several workers."""
        ...

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the workers, in place; returns it."""
        ...

    def gather(self, obj: Any) -> list[Any]:
        """Every worker's ``obj``, by rank."""
        ...

    def report(self, metrics: dict[str, Any], write: Writer) -> None:
        """End of an epoch: rank 0's ``write`` makes the checkpoint; every rank calls this."""
        ...


@dataclass(frozen=True)
class FitSpec:
    """Where and how a loop runs. ``best`` names the metric that picks the exported checkpoint
    (``best_order`` "max" or "min"); without one the latest is exported (``out/model.pt``);
    ``curves`` names the metrics plotted, one panel per group."""

    name: str
    out: str
    workers: int = 1
    gpu: bool | None = None
    cpus_per_worker: float | None = None
    executor: Literal["ray", "local"] = "ray"
    best: str | None = None
    best_order: Literal["max", "min"] = "max"
    curves: tuple[tuple[str, ...], ...] = (("loss",),)
    ray_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FitResult:
    model: Path
    last: Path
    history: list[dict[str, Any]]
    metrics: dict[str, Any]


def save_state(folder: Path, epoch: int, history: list[dict[str, Any]], **state: Any) -> None:
    """``state.pt``: the epoch just finished, the history so far (one metrics row per epoch) and
    whatever else the loop resumes from (optimizer and scheduler state dicts, RNG states)."""
    import torch

    torch.save({"epoch": epoch, "history": history, **state}, folder / STATE_NAME)


def read_state(folder: str | Path) -> dict[str, Any]:
    """The training state beside a checkpoint, loaded with ``weights_only=True``; errors name the file."""
    path = Path(folder) / STATE_NAME
    if not path.is_file():
        raise LodeInputError(folder, f"not a training checkpoint folder ({STATE_NAME} missing)")
    return entries(load_torch(path, path, "Lode training state"), path, "Lode training state", ("epoch", "history"))


def restore(state: dict[str, Any] | None, **stateful: Any) -> tuple[list[dict[str, Any]], int]:
    """Load each of ``stateful`` (optimizer, scheduler, scaler: anything with ``load_state_dict``)
    from the entry of ``state`` of the same name; returns the history so far and the first epoch
    to run (``[], 0`` without a state)."""
    if state is None:
        return [], 0
    for name, obj in stateful.items():
        obj.load_state_dict(state[name])
    return list(state["history"]), int(state["epoch"]) + 1


def worker_threads(ctx: Context, threads: int | None = None) -> None:
    """CPU workers share the machine's cores (``threads`` overrides)."""
    import torch

    if ctx.device.type == "cpu":
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // ctx.world))


def _copy_files(src: Path, dst: Path, names: Sequence[str]) -> None:
    with staged_directory(dst) as staged:
        for f in names:
            shutil.copy2(src / f, staged / f)


class _RayContext:
    def __init__(self, last: str):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.world, self.rank = ctx.get_world_size(), ctx.get_world_rank()
        self._device = ray.train.torch.get_device()
        self.last = Path(last)

    @property
    def device(self) -> torch.device:
        return self._device

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        from ray.train.torch import prepare_model

        return prepare_model(model) if self.world > 1 else model.to(self.device)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def report(self, metrics: dict[str, Any], write: Writer) -> None:
        import ray.train

        if self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp))
            _copy_files(Path(tmp), self.last, sorted(p.name for p in Path(tmp).iterdir()))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


class _LocalContext:
    world, rank = 1, 0

    def __init__(self, spec: FitSpec):
        import torch

        self.spec, self.out = spec, Path(spec.out)
        self._device = torch.device("cuda" if spec.gpu is not False and torch.cuda.is_available() else "cpu")
        self.best: float | None = None
        self.metrics: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return self._device

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def report(self, metrics: dict[str, Any], write: Writer) -> None:
        last = self.out / "last"
        with staged_directory(last) as staged:
            write(staged)
        self.metrics = metrics
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        log.info("%s epoch %s: %s", self.spec.name, metrics.get("epoch"), shown)
        if _improves(self.spec, metrics, self.best):
            self.best = float(metrics[self.spec.best]) if self.spec.best else None
            atomic_copy(last / CHECKPOINT_NAME, self.out / CHECKPOINT_NAME)


def _improves(spec: FitSpec, metrics: dict[str, Any], best: float | None) -> bool:
    if spec.best is None or best is None:
        return True
    value = float(metrics[spec.best])
    return value > best if spec.best_order == "max" else value < best


def _ray_entry(config: dict[str, Any]) -> None:
    config["loop"](config["config"], _RayContext(config["last"]))


def fit(loop: Callable[[dict[str, Any], Context], None], config: dict[str, Any], spec: FitSpec) -> FitResult:
    """Run ``loop(config, ctx)`` as ``spec`` says; returns where the exported and latest checkpoints
    are and the history. ``spec.ray_options`` go to ``TorchTrainer`` (``datasets``, ``dataset_config``)."""
    out = Path(spec.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if spec.executor == "local":
        ctx = _LocalContext(spec)
        loop(config, ctx)
        metrics = ctx.metrics
    else:
        metrics = _fit_on_ray(loop, config, spec, out)
    history = list(read_state(out / "last")["history"])
    write_curves(history, out, spec.curves)
    best = _best_row(spec, history)
    summary = {**metrics, "best_epoch": best.get("epoch"), "history": history}
    if spec.best:
        summary[f"best_{spec.best}"] = best.get(spec.best)
    atomic_write_text(out / "train_metrics.json", json.dumps(summary, indent=1, default=str))
    return FitResult(out / CHECKPOINT_NAME, out / "last", history, metrics)


def _best_row(spec: FitSpec, history: list[dict[str, Any]]) -> dict[str, Any]:
    key = spec.best
    if key is None or not history:
        return history[-1] if history else {}
    pick = max if spec.best_order == "max" else min
    return pick(history, key=lambda r: float(r[key]))


def _fit_on_ray(loop: Callable, config: dict[str, Any], spec: FitSpec, out: Path) -> dict[str, Any]:
    from ray.train import CheckpointConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from engine.runtime import init_ray
    from engine.train.scaling import scaling_config

    init_ray()
    trainer = TorchTrainer(
        _ray_entry,
        train_loop_config={"loop": loop, "config": config, "last": str(out / "last")},
        scaling_config=scaling_config(spec.workers, spec.gpu, spec.cpus_per_worker),
        run_config=RunConfig(
            name=f"{spec.name}-{int(time.time() * 1000)}",
            storage_path=str(out / "ray_results"),
            checkpoint_config=CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=spec.best, checkpoint_score_order=spec.best_order
            ),
        ),
        **spec.ray_options,
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"{spec.name}: training finished without a checkpoint")
    best, key = result.checkpoint, spec.best
    if key and result.best_checkpoints:
        pick = max if spec.best_order == "max" else min
        best = pick(result.best_checkpoints, key=lambda cm: float(cm[1][key]))[0]
    with best.as_directory() as d:
        atomic_copy(Path(d) / CHECKPOINT_NAME, out / CHECKPOINT_NAME)
    with result.checkpoint.as_directory() as d:
        _copy_files(Path(d), out / "last", sorted(p.name for p in Path(d).iterdir()))
    return dict(result.metrics or {})


def write_curves(history: list[dict[str, Any]], out: Path, panels: Sequence[Sequence[str]]) -> tuple[Path, Path]:
    """``curves.csv`` (one row per epoch, every scalar metric) and ``curves.png`` (one panel per
    group of ``panels``, by step or else by epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k, v in (history[0] if history else {}).items() if isinstance(v, int | float | None)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    atomic_write_text(out / "curves.csv", buf.getvalue())
    x_key = "step" if "step" in keys else "epoch"
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, group in zip(axes[0], panels):
        for k in group:
            ax.plot([r[x_key] for r in history], [r.get(k) for r in history], "o-", label=k)
        ax.set(xlabel=x_key, ylabel=", ".join(group))
        if len(group) > 1:
            ax.legend()
    fig.tight_layout()
    with atomic_path(out / "curves.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out / "curves.csv", out / "curves.png"
