"""Minimal data-parallel training with Ray Train's TorchTrainer on random patches."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.classes import LUMENSTONE, ClassSet
from engine.segment.checkpoint import ModelCard, save_checkpoint
from engine.train.data import channel_stats, codes_present, load_split, random_patches
from schemas.config import TrainConfig

log = logging.getLogger("lode.train")
CHECKPOINT_NAME = "model.pt"


def _worker_loop(config: dict[str, Any]) -> None:
    import ray.train
    import torch
    from ray.train.torch import prepare_model

    from engine.segment.models import create_model

    cfg = TrainConfig.model_validate(config["cfg"])
    card = ModelCard.model_validate(config["card"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)
    if not cfg.gpu:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    classes = card.class_set()
    samples = load_split(cfg.data, "train", classes)
    lut = classes.index_lut()
    rng = np.random.default_rng([cfg.seed, rank])
    local_batch = max(1, cfg.batch_size // world)

    model = prepare_model(create_model(card.arch, card.encoder, card.in_channels, len(classes)))
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=5)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    mean = torch.tensor(card.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(card.std, device=device).view(1, -1, 1, 1)
    log_every = max(1, cfg.steps // 5)
    running: list[float] = []
    first_loss = None
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        xs, ys = random_patches(samples, lut, cfg.patch, local_batch, rng)
        x = (torch.from_numpy(xs).to(device).float() / 255 - mean) / std
        y = torch.from_numpy(ys).to(device).long()
        model.train()
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        running.append(loss.item())
        if step % log_every == 0 or step == cfg.steps:
            avg = float(np.mean(running))
            first_loss = avg if first_loss is None else first_loss
            sched.step(avg)
            running = []
            metrics = {"step": step, "loss": avg, "first_loss": first_loss, "lr": opt.param_groups[0]["lr"],
                       "seconds": time.perf_counter() - t0}
            if step == cfg.steps and rank == 0:
                with tempfile.TemporaryDirectory() as tmp:
                    save_checkpoint(Path(tmp) / CHECKPOINT_NAME, model, card)
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            else:
                ray.train.report(metrics)


def reference_colors(samples, classes: ClassSet) -> dict[str, list[float]]:
    """Mean linear-RGB colour of each class over the training images (for colour calibration)."""
    out: dict[str, list[float]] = {}
    for c in classes.codes:
        acc, n = np.zeros(3), 0
        for s in samples:
            sel = s.mask == c
            if sel.any():
                px = (s.image[..., :3][sel].astype(np.float64) / 255.0) ** 2.2
                acc += px.sum(0)
                n += int(sel.sum())
        if n:
            out[str(c)] = (acc / n).tolist()
    return out


def train(cfg: TrainConfig) -> Path:
    """Train and write ``<out>/model.pt``; returns its path."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from engine.runtime import init_ray

    if cfg.classes:
        classes = ClassSet.from_codes(cfg.classes, source="--classes")
        samples = load_split(cfg.data, "train", classes)
    else:
        samples = load_split(cfg.data, "train", LUMENSTONE)
        classes = ClassSet.from_codes(codes_present(samples))
    mean, std = channel_stats(samples)
    card = ModelCard(arch=cfg.arch, encoder=cfg.encoder, classes=classes.to_dicts(), mean=mean, std=std,
                     in_channels=len(samples[0].channels), channels=samples[0].channels,
                     window=cfg.window, overlap=cfg.overlap, reference_colors=reference_colors(samples, classes),
                     training={"data": str(cfg.data), "steps": cfg.steps, "patch": cfg.patch,
                               "batch_size": cfg.batch_size, "workers": cfg.workers, "seed": cfg.seed})
    del samples
    init_ray()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"cfg": cfg.model_dump(), "card": card.model_dump()},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.gpu),
        run_config=RunConfig(name=f"lode-train-{int(time.time())}", storage_path=str(out / "ray_results")),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:
        blob = (Path(d) / CHECKPOINT_NAME).read_bytes()
    target = out / CHECKPOINT_NAME
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(target)
    (out / "train_metrics.json").write_text(json.dumps(result.metrics, indent=1, default=str))
    return target
