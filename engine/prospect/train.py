"""Label-free training of the prospectivity models, through Ray Train.

Windows come from a pool of stack blocks held in memory (a few blocks, however
large the region); each step draws a random batch of windows with at least half
their cells valid, with random flips and quarter turns. ``fit`` is the plain
torch loop; ``train_with_ray`` runs it inside a ``TorchTrainer`` worker and brings
the checkpoint back. A checkpoint (``torch.save`` dict) carries the model kind,
config and weights, the stack channel names, and for the MAE the Gaussian fitted
to training latents (mean, precision) used for the latent-density score.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import LodeInputError
from engine.io.atomic import atomic_copy
from engine.prospect.checkpoint import load_checkpoint, save_checkpoint
from engine.prospect.model import ConvAutoencoder, ProspectMAE, build, count_parameters
from engine.prospect.stack import Stack, open_stack


class WindowPool:
    """Random training windows from up to ``blocks`` stack blocks of ``block`` cells."""

    def __init__(
        self, stack: Stack, window: int, blocks: int = 8, block: int = 512, seed: int = 0, min_valid: float = 0.5
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


def fit(
    model: ProspectMAE | ConvAutoencoder,
    pool: WindowPool,
    steps: int,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log=None,
) -> list[float]:
    """Plain torch loop: AdamW, cosine decay; returns the per-step losses."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    for step in range(steps):
        xb, vb = pool.batch(batch)
        x, v = torch.from_numpy(xb).to(device), torch.from_numpy(vb).to(device)
        if isinstance(model, ProspectMAE):
            loss = model.loss(x, v, model.random_mask(x.shape[0], gen, torch.device(device)))
        else:
            loss = model.loss(x, v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
        if log and (step % 100 == 0 or step == steps - 1):
            log(step, float(np.mean(losses[-100:])))
    return losses


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


def verify_checkpoint(path: str | Path) -> dict:
    """Load the whole checkpoint and score one blank window with it: weights and scores must be
    finite. Returns the checkpoint; raises ``LodeInputError`` naming the file."""
    from engine.prospect.score import CAEScorer, MAEScorer

    net, ck = load_checkpoint(path)
    if not all(torch.isfinite(t).all() for t in net.state_dict().values() if t.is_floating_point()):
        raise LodeInputError(path, "weights hold NaN or infinite values")
    c, w = int(ck["config"]["channels"]), int(ck["config"]["window"])
    channels = list(range(c))
    scorer = (
        MAEScorer(net, ck["latent"], "cpu", score_channels=channels, shifts=1, drop_top=0)
        if isinstance(net, ProspectMAE)
        else CAEScorer(net, "cpu", score_channels=channels, shifts=1, drop_top=0)
    )
    if not np.isfinite(scorer(np.zeros((1, c, w, w), np.float32), np.ones((1, w, w), np.float32))).all():
        raise LodeInputError(path, "the model gives non-finite scores on a blank window")
    return ck


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


def train_local(
    stack_path: str | Path,
    out: str | Path,
    kind: str = "mae",
    steps: int = 1500,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    pool_blocks: int = 8,
    config: dict | None = None,
    log=None,
) -> dict:
    """Train one model on one stack in this process and write its checkpoint; returns a summary."""
    stack = open_stack(stack_path)
    cfg = config or default_config(kind, len(stack.channels))
    torch.manual_seed(seed)
    model = build(kind, cfg)
    pool = WindowPool(stack, cfg["window"], blocks=pool_blocks, seed=seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    losses = fit(model, pool, steps, batch, lr, seed, device, log)
    extra: dict[str, Any] = {
        "train": {
            "steps": steps,
            "batch": batch,
            "lr": lr,
            "seed": seed,
            "final_loss": float(np.mean(losses[-50:])),
            "seconds": time.perf_counter() - t0,
            "parameters": count_parameters(model),
        }
    }
    if isinstance(model, ProspectMAE):
        extra["latent"] = fit_latent_gaussian(model, pool, device=device)
    save_checkpoint(out, model, kind, stack.channels, extra)
    return extra["train"]


def _ray_worker(cfg: dict) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        summary = train_local(
            cfg["stack"],
            Path(tmp) / "model.pt",
            cfg["kind"],
            cfg["steps"],
            cfg["batch"],
            cfg["lr"],
            cfg["seed"],
            cfg["pool_blocks"],
            cfg.get("config"),
        )
        ray.train.report(summary, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def train_with_ray(
    stack_path: str | Path,
    out: str | Path,
    kind: str = "mae",
    steps: int = 1500,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    pool_blocks: int = 8,
    config: dict | None = None,
    storage: str | Path | None = None,
) -> dict:
    """Run ``train_local`` as a one-worker Ray ``TorchTrainer`` (GPU when there is one) and copy the
    checkpoint to ``out``."""
    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer

    from engine.train.scaling import scaling_config

    open_stack(stack_path)
    from engine.runtime import init_ray

    init_ray()
    storage_dir = Path(storage) if storage else Path(tempfile.mkdtemp(prefix="lode-prospect-train-"))
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config=dict(
            stack=str(Path(stack_path).resolve()),
            kind=kind,
            steps=steps,
            batch=batch,
            lr=lr,
            seed=seed,
            pool_blocks=pool_blocks,
            config=config,
        ),
        scaling_config=scaling_config(1),
        run_config=RunConfig(name=f"prospect-{kind}", storage_path=str(storage_dir.resolve())),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("prospect training finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        atomic_copy(Path(d) / "model.pt", out)
    if not storage:
        shutil.rmtree(storage_dir, ignore_errors=True)
    return dict(result.metrics or {})


if __name__ == "__main__":
    from engine.io.torchfile import verify_main

    verify_main(verify_checkpoint)
