"""Train the lineament U-Net on a zarr training set with Ray Train (``TorchTrainer``).

Each step draws a batch of random windows (random crop, flips and quarter turns, which map a
survey onto another valid field geometry) from the in-memory training set; the loss is BCE +
Dice against the axis band. Every epoch has the same fixed number of steps. The final
checkpoint is written with :func:`engine.geophys.model.save_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.geophys.model import DEFAULT_CARD
from engine.io.atomic import atomic_copy, atomic_write_json
from engine.io.layout import array_at


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
    card: dict[str, Any] = field(default_factory=dict)


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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from engine.geophys.model import build_model, dice_bce_loss, load_checkpoint, normalise_windows, save_checkpoint

    cfg = TrainConfig(**config)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    card = {**DEFAULT_CARD, "encoder": cfg.encoder, "window": cfg.window, **cfg.card}
    if cfg.init_checkpoint:
        model, card = load_checkpoint(cfg.init_checkpoint)
        card = {**card, "window": cfg.window}
    else:
        model = build_model(card)
    model = ray.train.torch.prepare_model(model) if ray.train.get_context().get_world_size() > 1 else model.to(device)
    x, y = _load_set(cfg.data)
    rank = ray.train.get_context().get_world_rank()
    rng = np.random.default_rng([cfg.seed, rank])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    start = time.monotonic()
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        for _ in range(cfg.steps_per_epoch):
            xb, yb = sample_batch(rng, x, y, cfg.batch_size, cfg.window)
            xt = normalise_windows(torch.from_numpy(xb).to(device))
            loss = dice_bce_loss(model(xt), torch.from_numpy(yb).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
        elapsed = (time.monotonic() - start) / 60
        stop = cfg.max_minutes is not None and elapsed >= cfg.max_minutes
        metrics = {"epoch": epoch, "step": step, "loss": float(np.mean(losses)), "minutes": elapsed}
        with tempfile.TemporaryDirectory() as tmp:
            net = getattr(model, "module", model)
            save_checkpoint(Path(tmp) / "model.pt", net, {**card, "trained": {"steps": step, "loss": metrics["loss"]}})
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
        if stop:
            break


def train(config: TrainConfig) -> Path:
    """Run the Ray Train loop; returns the path of the final checkpoint (``<out>/model.pt``)."""

    from ray.train import CheckpointConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from engine.train.scaling import scaling_config

    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, data=str(Path(config.data).resolve()))
    from engine.runtime import init_ray

    init_ray()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=dataclasses.asdict(config),
        scaling_config=scaling_config(1),
        run_config=RunConfig(
            name="lineaments", storage_path=str(out / "ray_results"), checkpoint_config=CheckpointConfig(num_to_keep=1)
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:
        final = out / "model.pt"
        atomic_copy(Path(d) / "model.pt", final)
        atomic_copy(Path(d) / "model.pt.json", out / "model.pt.json")
    atomic_write_json(out / "metrics.json", result.metrics, indent=2, default=str)
    return final
