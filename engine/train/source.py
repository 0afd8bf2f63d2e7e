"""The balancing sampler as a Ray Data source, and augmentation as a CPU map stage.

Each read task is one balanced stream (``BalancedPatchSampler`` with stream ``(task, tasks)``
and seed ``[seed, epoch]``): streams never emit the same patch, and a resumed run draws the
same patches for an epoch as an uninterrupted one. Rows carry coordinates (image, mask, y0,
x0, augmentation seed) and the class pixel counts of the drawn patch; pixels are read only in
the augmentation stage (``AugmentPatches``), which cuts, warps and maps codes to class indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np

from engine.io.images import read_mask
from engine.train.augment import VOID, AugmentParams, augment_patch
from engine.train.data import load_pair
from engine.train.sampler import BalancedPatchSampler, SamplerParams


@dataclass(frozen=True)
class StreamPlan:
    """Patch streams of a run: ``tasks`` read tasks per epoch, each drawing ``per_task`` patches."""

    images: tuple[str, ...]
    masks: tuple[str, ...]
    params: SamplerParams
    seed: int
    epochs: tuple[int, ...]
    tasks: int
    per_task: int
    cache_dir: str | None = None
    rows_per_block: int = 64


def _load_masks(paths: tuple[str, ...]) -> list[np.ndarray]:
    return [read_mask(p) for p in paths]


def stream_rows(plan: StreamPlan, epoch: int, task: int) -> list[dict[str, np.ndarray]]:
    """Draw the patches of stream ``task`` in ``epoch`` as column batches of coordinates."""
    sampler = BalancedPatchSampler(
        _load_masks(plan.masks),
        plan.params,
        seed=plan.seed * 100_003 + epoch,
        cache_dir=plan.cache_dir,
        names=plan.masks,
        stream=(task, plan.tasks),
    )
    draws = []
    counts = np.empty((plan.per_task, len(plan.params.classes)), np.int64)
    for i in range(plan.per_task):
        before = sampler.tally.pixels.copy()
        draws.append(sampler.draw())
        counts[i] = sampler.tally.pixels - before
    idx = np.array([d[0] for d in draws], np.int64)
    seeds = np.random.default_rng([plan.seed, epoch, task, 1]).integers(0, 2**62, len(draws))
    out = []
    for s in range(0, len(draws), plan.rows_per_block):
        sl = slice(s, s + plan.rows_per_block)
        out.append(
            {
                "image": np.array([plan.images[i] for i in idx[sl]]),
                "mask": np.array([plan.masks[i] for i in idx[sl]]),
                "y0": np.array([d[1] for d in draws[sl]], np.int64),
                "x0": np.array([d[2] for d in draws[sl]], np.int64),
                "seed": seeds[sl],
                "counts": counts[sl],
                "epoch": np.full(len(idx[sl]), epoch, np.int64),
                "stream": np.full(len(idx[sl]), task, np.int64),
            }
        )
    return out


class BalancedPatchSource:
    """Ray Data ``Datasource``: one read task per (epoch, stream)."""

    def __new__(cls, plan: StreamPlan):
        import pyarrow as pa
        from ray.data.block import BlockMetadata
        from ray.data.datasource import Datasource, ReadTask
        from ray.data.extensions import ArrowTensorArray

        def table(cols: dict[str, np.ndarray]):
            return pa.table({k: ArrowTensorArray.from_numpy(v) if v.ndim > 1 else pa.array(v) for k, v in cols.items()})

        def read(epoch: int, task: int):
            return [table(c) for c in stream_rows(plan, epoch, task)]

        class _Source(Datasource):
            def estimate_inmemory_data_size(self) -> int:
                return len(plan.epochs) * plan.tasks * plan.per_task * 256

            def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
                meta = BlockMetadata(
                    num_rows=plan.per_task, size_bytes=plan.per_task * 256, input_files=None, exec_stats=None
                )
                return [
                    ReadTask(partial(read, e, t), meta, per_task_row_limit=per_task_row_limit)
                    for e in plan.epochs
                    for t in range(plan.tasks)
                ]

            def get_name(self) -> str:
                return "BalancedPatches"

        return _Source()


@lru_cache(maxsize=64)
def _pixels(image: str, mask: str) -> tuple[np.ndarray, np.ndarray]:
    img, m, _ = load_pair(image, mask)
    return img, m


def augment_batch(
    batch: dict[str, np.ndarray], patch: int, classes: tuple[int, ...], params: AugmentParams | None
) -> dict[str, Any]:
    """Map stage: cut each drawn patch, augment it, map codes to class indices (``VOID`` elsewhere)."""
    params = params or AugmentParams(rotation=0, scale=0, flips=False, brightness=0, color=0)
    lut = np.full(256, VOID, np.uint8)
    lut[list(classes)] = np.arange(len(classes), dtype=np.uint8)
    n = len(batch["y0"])
    xs: np.ndarray | None = None
    ys = np.empty((n, patch, patch), np.uint8)
    for i in range(n):
        img, mask = _pixels(str(batch["image"][i]), str(batch["mask"][i]))
        if xs is None:
            xs = np.empty((n, img.shape[2], patch, patch), np.uint8)
        rng = np.random.default_rng(int(batch["seed"][i]))
        a, m = augment_patch(img, mask, int(batch["y0"][i]), int(batch["x0"][i]), patch, params, rng)
        xs[i] = np.moveaxis(a, -1, 0)
        ys[i] = lut[m]
    return {"image": xs, "target": ys, "counts": batch["counts"]}


def patch_dataset(plan: StreamPlan, augment: AugmentParams | None, num_cpus: float = 0.5):
    """The Ray dataset of augmented patches ``image (c,p,p) uint8``, ``target (p,p) uint8``, ``counts``."""
    import ray.data

    ds = ray.data.read_datasource(BalancedPatchSource(plan), num_cpus=num_cpus)
    return ds.map_batches(
        augment_batch,
        fn_kwargs={"patch": plan.params.patch, "classes": plan.params.classes, "params": augment},
        batch_size=16,
        num_cpus=num_cpus,
    )
