"""Train the lineament U-Net on a zarr training set, through :func:`engine.train.fit.fit` (Ray
Train over N workers, DDP, or in this process).

Each step draws a batch of random windows (random crop, flips and quarter turns, which map a
survey onto another valid field geometry) from the in-memory training set; the loss is BCE +
Dice against the axis band. Every epoch has the same fixed number of steps; ``batch_size`` is
the global batch, split equally over the workers, each drawing from its own random stream. The
checkpoint of each epoch is written with :func:`engine.geophys.model.save_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.errors import LodeInputError
from engine.geophys.card import LineamentCard
from engine.io.layout import array_at
from engine.train.fit import (
    CHECKPOINT_NAME,
    Context,
    FitSpec,
    fit,
    read_state,
    restore,
    save_state,
    worker_threads,
)


@dataclass
class TrainConfig:
    data: str
    out: str
    encoder: str = "vgg16_bn"
    window: int = 128
    batch_size: int = 8
    epochs: int = 10
    steps_per_epoch: int = 100
    lr: float = 1e-3
    seed: int = 0
    max_minutes: float | None = None
    threads: int | None = None
    init_checkpoint: str | None = None
    workers: int = 1
    gpu: bool | None = None
    resume: str | None = None
    executor: Literal["ray", "local"] = "ray"


def _load_set(path: str) -> tuple[np.ndarray, np.ndarray]:
    import zarr

    group = zarr.open_group(path, mode="r")
    return (
        np.asarray(array_at(group, "anomaly")[:], dtype=np.float32),
        np.asarray(array_at(group, "target")[:], dtype=np.float32),
    )


def sample_batch(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, batch: int, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random augmented windows ``(B, 1, window, window)`` of anomaly and target."""
    n, h, w = x.shape
    xb = np.empty((batch, 1, window, window), np.float32)
    yb = np.empty_like(xb)
    for b in range(batch):
        i = rng.integers(n)
        r, c = rng.integers(0, h - window + 1), rng.integers(0, w - window + 1)
        xs, ys = x[i, r : r + window, c : c + window], y[i, r : r + window, c : c + window]
        k = int(rng.integers(4))
        xs, ys = np.rot90(xs, k), np.rot90(ys, k)
        if rng.random() < 0.5:
            xs, ys = xs[:, ::-1], ys[:, ::-1]
        xb[b, 0], yb[b, 0] = xs, ys
    return xb, yb


def train_loop(config: dict[str, Any], ctx: Context) -> None:
    """One worker of :func:`train`: draws ``batch_size / world`` windows a step from its own stream."""
    import torch

    from engine.geophys.model import build_model, dice_bce_loss, load_checkpoint, normalise_windows, save_checkpoint

    cfg = TrainConfig(**config)
    worker_threads(ctx, cfg.threads)
    torch.manual_seed(cfg.seed)
    device = ctx.device
    card = LineamentCard(encoder=cfg.encoder, window=cfg.window)
    state = read_state(cfg.resume) if cfg.resume else None
    start = cfg.resume or cfg.init_checkpoint
    if start:
        net, card = load_checkpoint(Path(start) / CHECKPOINT_NAME if cfg.resume else start)
        card = card.model_copy(update={"window": cfg.window})
    else:
        net = build_model(card)
    model = ctx.prepare(net)
    x, y = _load_set(cfg.data)
    rng = np.random.default_rng([cfg.seed, ctx.rank])
    local_batch = cfg.batch_size // ctx.world
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    history, first = restore(state, optimizer=opt, scheduler=sched)
    if state is not None:
        streams = state.get("rng") or []
        if len(streams) == ctx.world:
            rng.bit_generator.state = streams[ctx.rank]
        else:
            rng = np.random.default_rng([cfg.seed, ctx.rank, first])
    start_time = time.monotonic() - 60 * (history[-1]["minutes"] if history else 0.0)
    step = first * cfg.steps_per_epoch
    for epoch in range(first, cfg.epochs):
        model.train()
        losses = []
        for _ in range(cfg.steps_per_epoch):
            xb, yb = sample_batch(rng, x, y, local_batch, cfg.window)
            xt = normalise_windows(torch.from_numpy(xb).to(device))
            loss = dice_bce_loss(model(xt), torch.from_numpy(yb).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
        mean_loss = float(ctx.all_reduce(torch.tensor([float(np.mean(losses))], dtype=torch.float64))[0]) / ctx.world
        elapsed = (time.monotonic() - start_time) / 60
        row = {"epoch": epoch, "step": step, "loss": mean_loss, "minutes": elapsed, "world_size": ctx.world}
        history.append(row)
        streams = ctx.gather(rng.bit_generator.state)

        def write(
            folder: Path, epoch: int = epoch, step: int = step, loss: float = mean_loss, streams: list = streams
        ) -> None:
            net = getattr(model, "module", model)
            save_checkpoint(
                folder / CHECKPOINT_NAME, net, card.model_copy(update={"trained": {"steps": step, "loss": loss}})
            )
            save_state(folder, epoch, history, optimizer=opt.state_dict(), scheduler=sched.state_dict(), rng=streams)

        ctx.report(row, write)
        if cfg.max_minutes is not None:
            late = ctx.all_reduce(torch.tensor([float(elapsed >= cfg.max_minutes)], dtype=torch.float64))
            if late[0] > 0:
                break


def train(config: TrainConfig) -> Path:
    """Train on ``config.workers`` workers; returns the path of the exported checkpoint
    (``<out>/model.pt``, the last epoch's); ``<out>/last/`` resumes."""
    if config.batch_size % config.workers:
        raise LodeInputError(
            "--batch-size", f"global batch {config.batch_size} does not split equally over {config.workers} workers"
        )
    if config.resume and int(read_state(config.resume)["epoch"]) + 1 >= config.epochs:
        raise LodeInputError(config.resume, f"checkpoint is at the last of {config.epochs} epochs: nothing to train")
    config = dataclasses.replace(
        config,
        data=str(Path(config.data).resolve()),
        resume=config.resume and str(Path(config.resume).resolve()),
        init_checkpoint=config.init_checkpoint and str(Path(config.init_checkpoint).resolve()),
    )
    spec = FitSpec(
        name="lineaments",
        out=config.out,
        workers=config.workers,
        gpu=config.gpu,
        executor=config.executor,
    )
    return fit(train_loop, dataclasses.asdict(config), spec).model
