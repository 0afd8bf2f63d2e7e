"""Label-free training of the prospectivity models, through :func:`engine.train.fit.fit` (Ray
Train over N workers, DDP, or in this process).

Windows come from a pool of stack blocks held in memory (a few blocks, however
large the region); each step draws a random batch of windows with at least half
their cells valid, with random flips and quarter turns. A checkpoint (``torch.save``
dict) carries the model kind, config and weights, the stack channel names, and for
the MAE the Gaussian fitted to training latents (mean, precision) used for the
latent-density score.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from engine.errors import LodeInputError
from engine.io.atomic import atomic_copy
from engine.nets import build, count_parameters
from engine.nets.mae import ProspectMAE, reconstruction_loss
from engine.prospect.checkpoint import ProspectCard, load_checkpoint, read_card, save_checkpoint
from engine.prospect.stack import Stack, open_stack
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


class WindowPool:
    """Random training windows from up to ``blocks`` stack blocks of ``block`` cells."""

    def __init__(
        self,
        stack: Stack,
        window: int,
        blocks: int = 8,
        block: int = 512,
        seed: int | list[int] = 0,
        min_valid: float = 0.5,
    ):
        rng = np.random.default_rng(seed)
        h, w = stack.shape
        origins = [
            (y, x) for y in range(0, max(1, h - window + 1), block) for x in range(0, max(1, w - window + 1), block)
        ]
        picks = rng.permutation(len(origins))[:blocks]
        self.data, self.valid = [], []
        for i in picks:
            y, x = origins[i]
            d, v = stack.read(y, min(h, y + block), x, min(w, x + block))
            if v.mean() > 0.05:
                self.data.append(np.nan_to_num(d, nan=0.0))
                self.valid.append(v.astype(np.float32))
        if not self.data:
            raise LodeInputError(stack.path, "no valid cells to train on")
        self.window, self.min_valid, self.rng = window, min_valid, rng

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        w = self.window
        xs: list[np.ndarray] = []
        vs: list[np.ndarray] = []
        tries = 0
        while len(xs) < n:
            tries += 1
            i = int(self.rng.integers(len(self.data)))
            d, v = self.data[i], self.valid[i]
            y = int(self.rng.integers(0, d.shape[1] - w + 1))
            x = int(self.rng.integers(0, d.shape[2] - w + 1))
            vw = v[y : y + w, x : x + w]
            if vw.mean() < self.min_valid and tries < 50 * n:
                continue
            dw = d[:, y : y + w, x : x + w]
            k = int(self.rng.integers(4))
            dw, vw = np.rot90(dw, k, axes=(1, 2)), np.rot90(vw, k)
            if self.rng.random() < 0.5:
                dw, vw = dw[:, :, ::-1], vw[:, ::-1]
            xs.append(np.ascontiguousarray(dw))
            vs.append(np.ascontiguousarray(vw))
        return np.stack(xs), np.stack(vs)


@torch.no_grad()
def fit_latent_gaussian(
    model: ProspectMAE, pool: WindowPool, windows: int = 512, batch: int = 64, device="cpu"
) -> dict[str, np.ndarray]:
    """Mean and (shrunk) precision of encoder latents of fully valid tokens of training windows."""
    from sklearn.covariance import LedoitWolf

    model.to(device).eval()
    feats = []
    for _ in range(max(1, windows // batch)):
        x, v = pool.batch(batch)
        lat = model.encode(torch.from_numpy(x).to(device), torch.from_numpy(v).to(device))
        p = model.patch
        tok_valid = torch.from_numpy(v).to(device).unfold(1, p, p).unfold(2, p, p).amin(dim=(-1, -2)).flatten(1) > 0
        feats.append(lat[tok_valid].cpu().numpy())
    f = np.concatenate(feats).astype(np.float64)
    lw = LedoitWolf().fit(f)
    return {"mean": lw.location_.astype(np.float32), "precision": lw.precision_.astype(np.float32)}


def verify_checkpoint(path: str | Path) -> ProspectCard:
    """Load the whole checkpoint and score one blank window with it: weights and scores must be
    finite. Returns the card; raises ``LodeInputError`` naming the file."""
    from engine.prospect.score import CAEScorer, MAEScorer

    net, card, latent = load_checkpoint(path)
    if not all(torch.isfinite(t).all() for t in net.state_dict().values() if t.is_floating_point()):
        raise LodeInputError(path, "weights hold NaN or infinite values")
    c, w = int(card.config["channels"]), int(card.config["window"])
    channels = list(range(c))
    scorer = (
        MAEScorer(net, latent, "cpu", score_channels=channels, shifts=1, drop_top=0)
        if isinstance(net, ProspectMAE)
        else CAEScorer(net, "cpu", score_channels=channels, shifts=1, drop_top=0)
    )
    if not np.isfinite(scorer(np.zeros((1, c, w, w), np.float32), np.ones((1, w, w), np.float32))).all():
        raise LodeInputError(path, "the model gives non-finite scores on a blank window")
    return card


def default_config(kind: str, channels: int) -> dict:
    if kind == "mae":
        return dict(
            channels=channels,
            window=64,
            patch=8,
            fused=32,
            dim=64,
            depth=4,
            heads=4,
            decoder_dim=64,
            decoder_depth=2,
            mask_ratio=0.5,
        )
    return dict(channels=channels, width=32, window=64)


@dataclass(frozen=True)
class TrainOptions:
    """One training run of a prospect model on one stack; ``batch`` is the global batch, split
    equally over ``workers``, and the ``steps`` are reported in ``epochs`` (checkpoints to resume from)."""

    stack: str
    kind: str = "mae"
    steps: int = 1500
    batch: int = 64
    lr: float = 1e-3
    seed: int = 0
    pool_blocks: int = 8
    config: dict | None = None
    epochs: int = 5
    threads: int | None = None
    resume: str | None = None


def train_loop(config: dict[str, Any], ctx: Context) -> None:
    """One worker of :func:`train`: AdamW with one-cycle decay over all steps, gradient clipping at
    1; rank 0 draws windows with ``seed`` (as a single process does), rank r with ``[seed, r]``."""
    o = TrainOptions(**config)
    worker_threads(ctx, o.threads)
    stack = open_stack(o.stack)
    cfg = o.config or default_config(o.kind, len(stack.channels))
    torch.manual_seed(o.seed)
    net = build(o.kind, **cfg)
    state = read_state(o.resume) if o.resume else None
    if state is not None:
        net.load_state_dict(load_checkpoint(Path(o.resume or "") / CHECKPOINT_NAME)[0].state_dict())
    pool = WindowPool(stack, cfg["window"], blocks=o.pool_blocks, seed=o.seed if ctx.rank == 0 else [o.seed, ctx.rank])
    gen = torch.Generator().manual_seed(o.seed + ctx.rank)
    torch.manual_seed(o.seed + ctx.rank)
    device = ctx.device
    model = ctx.prepare(net)
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=o.steps, pct_start=0.1)
    history, first = restore(state, optimizer=opt, scheduler=sched)
    if state is not None and len(state["rng"]) == ctx.world:
        pool.rng.bit_generator.state, mask_state, torch_state = state["rng"][ctx.rank]
        gen.set_state(mask_state)
        torch.set_rng_state(torch_state)
    local = o.batch // ctx.world
    per_epoch = -(-o.steps // o.epochs)
    t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
    recent: deque[float] = deque(maxlen=50)
    for epoch in range(first, o.epochs):
        model.train()
        losses = []
        for _ in range(min(per_epoch, o.steps - epoch * per_epoch)):
            xb, vb = pool.batch(local)
            x, v = torch.from_numpy(xb).to(device), torch.from_numpy(vb).to(device)
            if isinstance(net, ProspectMAE):
                mask = net.random_mask(x.shape[0], gen, device)
                loss = reconstruction_loss(model(x, v, mask), x, net.loss_weight(v, mask))
            else:
                loss = reconstruction_loss(model(x, v), x, v)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        recent.extend(losses)
        tail = ctx.all_reduce(torch.tensor([sum(losses), len(losses), sum(recent), len(recent)], dtype=torch.float64))
        row = {
            "epoch": epoch,
            "step": min(o.steps, (epoch + 1) * per_epoch),
            "loss": float(tail[0] / tail[1]),
            "final_loss": float(tail[2] / tail[3]),
            "seconds": time.perf_counter() - t0,
            "world_size": ctx.world,
        }
        history.append(row)
        streams = ctx.gather((pool.rng.bit_generator.state, gen.get_state(), torch.get_rng_state()))
        last = epoch == o.epochs - 1

        def write(
            folder: Path, row: dict = row, epoch: int = epoch, last: bool = last, streams: list = streams
        ) -> None:
            train = {
                "steps": row["step"],
                "batch": o.batch,
                "lr": o.lr,
                "seed": o.seed,
                "workers": ctx.world,
                "final_loss": row["final_loss"],
                "seconds": row["seconds"],
                "parameters": count_parameters(net),
            }
            latent = None
            if isinstance(net, ProspectMAE):
                saved = pool.rng.bit_generator.state
                latent = fit_latent_gaussian(net, pool, device=device)
                if not last:
                    pool.rng.bit_generator.state = saved
                net.train()
            save_checkpoint(folder / CHECKPOINT_NAME, net, o.kind, stack.channels, latent, train)
            save_state(folder, epoch, history, optimizer=opt.state_dict(), scheduler=sched.state_dict(), rng=streams)

        ctx.report(row, write)


def train(
    stack_path: str | Path,
    out: str | Path,
    kind: str = "mae",
    steps: int = 1500,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    pool_blocks: int = 8,
    config: dict | None = None,
    *,
    epochs: int = 5,
    workers: int = 1,
    gpu: bool | None = None,
    executor: Literal["ray", "local"] = "ray",
    threads: int | None = None,
    resume: str | Path | None = None,
) -> dict:
    """Train one model on one stack (:func:`engine.train.fit.fit`: Ray Train over ``workers`` or in
    this process) and write its checkpoint to ``out``; the run (``last/`` to resume from, curves,
    metrics) goes to ``<out>.train/``. Returns the checkpoint's training summary."""
    open_stack(stack_path)
    if batch % workers:
        raise LodeInputError("--batch", f"global batch {batch} does not split equally over {workers} workers")
    epochs = min(epochs, steps)
    if resume and int(read_state(resume)["epoch"]) + 1 >= epochs:
        raise LodeInputError(resume, f"checkpoint is at the last of {epochs} epochs: nothing to train")
    options = TrainOptions(
        str(Path(stack_path).resolve()),
        kind,
        steps,
        batch,
        lr,
        seed,
        pool_blocks,
        config,
        epochs,
        threads,
        str(Path(resume).resolve()) if resume else None,
    )
    out = Path(out)
    spec = FitSpec(
        name=f"prospect-{kind}",
        out=str(out.with_name(out.name + ".train")),
        workers=workers,
        gpu=gpu,
        executor=executor,
    )
    result = fit(train_loop, asdict(options), spec)
    atomic_copy(result.model, out)
    return dict(read_card(out).train)


if __name__ == "__main__":
    from engine.io.torchfile import verify_main

    verify_main(verify_checkpoint)
