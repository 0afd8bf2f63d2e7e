"""The segmentation training loop: balanced patch streams from Ray Data, DDP, validation with the
sliding-window predictor, run by :func:`engine.train.fit.fit` (best by validation mIoU kept, resume).

A checkpoint folder holds ``model.pt`` (state dict + model card, what ``lode segment`` reads) and
``state.pt`` (optimizer, scheduler, scaler, epoch, curves).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.classes import LUMENSTONE, ClassSet
from engine.errors import LodeInputError
from engine.segment.checkpoint import ModelCard, read_weights, save_checkpoint
from engine.train.augment import VOID, AugmentParams
from engine.train.data import Sample, channel_stats, codes_present, load_split, mask_codes, pairs
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
from engine.train.sampler import SamplerParams, Tally
from engine.train.source import StreamPlan, patch_dataset

log = logging.getLogger("lode.train")
CURVE_KEYS = ("epoch", "step", "loss", "val_miou", "val_pixel_accuracy", "lr", "seconds")


@dataclass(frozen=True)
class TrainOptions:
    """One training run. ``jobs.train`` builds it from the job's validated config
    (``schemas.config.TrainConfig``: same fields and defaults, documented there)."""

    data: str
    out: str
    arch: str = "pspnet"
    encoder: str = "resnet18"
    classes: list[int] | None = None
    patch: int = 256
    batch_size: int = 8
    steps: int = 200
    epochs: int = 1
    lr: float = 1e-3
    plateau_patience: int = 2
    loss: Literal["ce", "ce+dice", "ce+focal"] = "ce"
    sampler: Literal["balanced", "uniform"] = "balanced"
    alpha: float = 4.0
    candidates: int = 8
    strength: float = 1.0
    image_exponent: float = 1.0
    map_downscale: int = 8
    augment: bool = True
    streams: int | None = None
    val_split: str | None = None
    val_images: int | None = None
    void_border: int = 0
    resume: str | None = None
    workers: int = 1
    gpu: bool = False
    seed: int = 0
    window: int = 512
    overlap: float = 0.25

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.steps // self.epochs)


def _loss(kind: str):
    import segmentation_models_pytorch as smp
    import torch

    ce = torch.nn.CrossEntropyLoss(ignore_index=VOID)
    if kind == "ce":
        return ce
    extra = (
        smp.losses.DiceLoss("multiclass", ignore_index=VOID)
        if kind == "ce+dice"
        else smp.losses.FocalLoss("multiclass", ignore_index=VOID)
    )
    return lambda logits, target: ce(logits, target) + extra(logits, target)


def train_step(model, opt, scaler, loss_fn, x, y) -> float:
    """One optimizer step on a normalised batch ``x`` (n, c, h, w) with class-index targets ``y``
    (n, h, w); mixed precision on CUDA. Returns the batch loss."""
    import torch

    device = x.device
    with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        loss = loss_fn(model(x), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return float(loss.item())


def validate(model, card: ModelCard, samples: list[Sample], void_border: int = 0, batch_size: int = 4):
    """Confusion over ``samples`` with the project's sliding-window predictor (``BlockPredictor``)."""
    from engine.analyze.metrics import SegmentationScores
    from engine.raster.grid import Block
    from engine.segment.predictor import BlockPredictor

    device = next(model.parameters()).device
    codes = card.class_set().codes
    code_lut = np.asarray(codes, np.uint8)
    pred = BlockPredictor(model, card.mean, card.std, card.window, card.overlap, batch_size, device)
    scores = SegmentationScores.empty(codes)
    for s in samples:
        h, w = s.mask.shape
        labels, _ = pred.predict(np.moveaxis(s.image, -1, 0), (0, 0), (h, w), Block(0, 0, 0, h, w), len(codes))
        scores.add(s.mask, code_lut[labels], void_border=void_border)
    return scores


def _worker_loop(config: dict[str, Any], ctx: Context) -> None:
    import ray.train
    import torch

    from engine.nets import build

    cfg = TrainOptions(**config["cfg"])
    card = ModelCard.model_validate(config["card"])
    rank, world = ctx.rank, ctx.world
    torch.manual_seed(cfg.seed)
    worker_threads(ctx)
    classes = card.class_set()
    codes = classes.codes
    val = [
        s
        for i, s in enumerate(load_split(cfg.data, config["val_split"], classes)[: cfg.val_images])
        if i % world == rank
    ]
    local_batch = cfg.batch_size // world

    net = build(card.arch, encoder=card.encoder, in_channels=card.in_channels, classes=len(codes))
    state = None
    if config["resume"]:
        state = read_state(Path(config["resume"]))
        net.load_state_dict(read_weights(Path(config["resume"]) / CHECKPOINT_NAME))
    if world > 1 and cfg.gpu:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    model = ctx.prepare(net)
    device = ctx.device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=cfg.plateau_patience)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    history, start = restore(state, optimizer=opt, scheduler=sched, scaler=scaler)
    if state is not None:
        torch.set_rng_state(state["torch_rng"])
    loss_fn = _loss(cfg.loss)
    mean = torch.tensor(card.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(card.std, device=device).view(1, -1, 1, 1)

    shard = ray.train.get_dataset_shard("train")
    batches = iter(shard.iter_torch_batches(batch_size=local_batch, drop_last=True, local_shuffle_buffer_size=None))
    t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
    for epoch in range(start, cfg.epochs):
        model.train()
        losses, tally = [], torch.zeros(len(codes), dtype=torch.float64)
        for _ in range(cfg.steps_per_epoch):
            try:
                batch = next(batches)
            except StopIteration:
                raise RuntimeError(f"rank {rank}: patch stream ended early in epoch {epoch}") from None
            x = (batch["image"].to(device).float() / 255 - mean) / std
            y = batch["target"].to(device).long()
            tally += batch["counts"].to("cpu", torch.float64).sum(0)
            losses.append(train_step(model, opt, scaler, loss_fn, x, y))
        scores = validate(getattr(model, "module", model), card, val, cfg.void_border)
        conf = torch.from_numpy(scores.confusion)
        stats = torch.tensor([float(np.sum(losses)), float(len(losses))], dtype=torch.float64)
        for t in (conf, stats, tally):
            ctx.all_reduce(t)
        scores.confusion = conf.numpy()
        sched.step(scores.mean_iou)
        drawn = Tally(tuple(codes), tally.numpy().astype(np.int64))
        row = {
            "epoch": epoch,
            "step": (epoch + 1) * cfg.steps_per_epoch,
            "loss": float(stats[0] / stats[1]),
            "val_miou": scores.mean_iou,
            "val_pixel_accuracy": scores.pixel_accuracy,
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
            "val_iou": {str(c): (None if np.isnan(v) else float(v)) for c, v in zip(codes, scores.iou)},
            "sampled_share": {str(c): float(v) for c, v in zip(codes, drawn.shares)},
            "sampled_max_min_ratio": drawn.max_min_ratio(),
        }
        history.append(row)
        metrics = {k: row[k] for k in CURVE_KEYS} | {"first_loss": history[0]["loss"], "world_size": world}

        def write(folder: Path, epoch: int = epoch) -> None:
            save_checkpoint(folder / CHECKPOINT_NAME, model, card)
            save_state(
                folder,
                epoch,
                history,
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict(),
                scaler=scaler.state_dict(),
                torch_rng=torch.get_rng_state(),
            )

        ctx.report(metrics, write)


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


def held_out_split(data: str | Path, requested: str | None) -> str:
    if requested:
        return requested
    return "val" if (Path(data) / "imgs" / "val").is_dir() else "test"


def stream_plan(cfg: TrainOptions, codes: list[int], epochs: range, cache_dir: Path) -> StreamPlan:
    files = pairs(cfg.data, "train")
    tasks = cfg.streams or 2 * cfg.workers
    per_epoch = cfg.steps_per_epoch * (cfg.batch_size // cfg.workers) * cfg.workers
    params = SamplerParams(
        classes=tuple(codes),
        patch=cfg.patch,
        alpha=cfg.alpha,
        strength=cfg.strength if cfg.sampler == "balanced" else 0.0,
        image_exponent=cfg.image_exponent,
        downscale=cfg.map_downscale,
        candidates=cfg.candidates,
    )
    return StreamPlan(
        tuple(str(i) for i, _ in files),
        tuple(str(m) for _, m in files),
        params,
        cfg.seed,
        tuple(epochs),
        tasks,
        -(-per_epoch // tasks),
        str(cache_dir),
    )


def _card(cfg: TrainOptions) -> ModelCard:
    if cfg.resume:
        from engine.segment.checkpoint import read_card

        return read_card(Path(cfg.resume) / CHECKPOINT_NAME)
    if cfg.classes:
        classes = ClassSet.from_codes(cfg.classes, source="--classes")
        samples = load_split(cfg.data, "train", classes)
    else:
        samples = load_split(cfg.data, "train", LUMENSTONE)
        held_out = mask_codes(cfg.data, held_out_split(cfg.data, cfg.val_split), LUMENSTONE)
        classes = ClassSet.from_codes(sorted(set(codes_present(samples)) | set(held_out)))
    mean, std = channel_stats(samples)
    return ModelCard(
        arch=cfg.arch,
        encoder=cfg.encoder,
        classes=classes.to_dicts(),
        mean=mean,
        std=std,
        in_channels=len(samples[0].channels),
        channels=samples[0].channels,
        window=cfg.window,
        overlap=cfg.overlap,
        reference_colors=reference_colors(samples, classes),
        training={
            "data": str(cfg.data),
            "steps": cfg.steps,
            "epochs": cfg.epochs,
            "patch": cfg.patch,
            "batch_size": cfg.batch_size,
            "workers": cfg.workers,
            "seed": cfg.seed,
            "sampler": cfg.sampler,
            "loss": cfg.loss,
            "augment": cfg.augment,
        },
    )


def check_resume_classes(cfg: TrainOptions, card: ModelCard, val_split: str) -> None:
    """A resumed model keeps its class set: ``--classes`` must equal it and every mask code of the
    training and held-out splits must be in it (checked on the masks alone, before Ray starts)."""
    if cfg.resume is None:
        return
    ckpt = Path(cfg.resume) / CHECKPOINT_NAME
    codes = card.class_set().codes
    if cfg.classes and sorted(cfg.classes) != sorted(codes):
        raise LodeInputError(ckpt, f"class set {codes} of the checkpoint differs from --classes {sorted(cfg.classes)}")
    data = set(mask_codes(cfg.data, "train")) | set(mask_codes(cfg.data, val_split))
    extra = sorted(data - set(codes) - {VOID})
    if extra:
        raise LodeInputError(
            ckpt,
            f"class set {codes} of the checkpoint differs from the data's: mask code(s) "
            f"{', '.join(map(str, extra))} of {cfg.data} are not in it",
        )


def _cpus_per_worker(workers: int) -> float:
    """CPU workers leave one CPU of the cluster to the sampler and augmentation tasks (else they starve)."""
    import ray

    total = ray.cluster_resources().get("CPU", 1.0)
    return min(1.0, max(0.25, (total - 1) / workers))


def train(cfg: TrainOptions) -> Path:
    """Train and write ``<out>/model.pt`` (best validation mIoU), ``<out>/last/`` (to resume from),
    ``curves.csv``/``curves.png`` and ``train_metrics.json``; returns the path of ``model.pt``."""
    from ray.train import DataConfig

    from engine.runtime import init_ray

    if cfg.batch_size % cfg.workers:
        raise LodeInputError(
            "--batch-size", f"global batch {cfg.batch_size} does not split equally over {cfg.workers} workers"
        )
    start = 0
    if cfg.resume:
        start = int(read_state(cfg.resume)["epoch"]) + 1
        if start >= cfg.epochs:
            raise LodeInputError(cfg.resume, f"checkpoint is at epoch {start} of {cfg.epochs}: nothing left to train")
    card = _card(cfg)
    val_split = held_out_split(cfg.data, cfg.val_split)
    pairs(cfg.data, val_split)
    if cfg.resume:
        check_resume_classes(cfg, card, val_split)
    init_ray()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = stream_plan(cfg, card.class_set().codes, range(start, cfg.epochs), out / "sampler_cache")
    ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = True
    spec = FitSpec(
        name="lode-train",
        out=str(out),
        workers=cfg.workers,
        gpu=cfg.gpu,
        cpus_per_worker=_cpus_per_worker(cfg.workers),
        best="val_miou",
        curves=(("loss",), ("val_miou", "val_pixel_accuracy")),
        ray_options={
            "datasets": {"train": patch_dataset(plan, AugmentParams() if cfg.augment else None)},
            "dataset_config": DataConfig(execution_options=ingest),
        },
    )
    config = {
        "cfg": asdict(cfg),
        "card": card.model_dump(),
        "val_split": val_split,
        "resume": str(Path(cfg.resume).resolve()) if cfg.resume else None,
    }
    return fit(_worker_loop, config, spec).model
