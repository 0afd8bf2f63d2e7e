"""Train a segmentation model with Ray Train on patches of a LumenStone-layout collection."""

from __future__ import annotations

import argparse

from jobs.common import setup_logging
from jobs.contract import Job
from schemas.config import TrainConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help="LumenStone-layout folder (imgs/, masks/)")
    p.add_argument("--out", help="output directory (model.pt)")
    p.add_argument("--arch", help="pspnet, unet, upernet, fpn, ... (default pspnet)")
    p.add_argument("--encoder", help="smp encoder (default resnet18)")
    p.add_argument("--classes", type=int, nargs="+", help="class codes (default: codes in the masks)")
    p.add_argument("--patch", type=int, help="patch size (default 256)")
    p.add_argument("--batch-size", type=int, help="global batch size (default 8)")
    p.add_argument("--steps", type=int, help="optimizer steps in all (default 200)")
    p.add_argument("--epochs", type=int, help="validation + checkpoint points, steps split equally (default 1)")
    p.add_argument("--lr", type=float, help="Adam learning rate, halved on a validation plateau (default 1e-3)")
    p.add_argument("--loss", choices=("ce", "ce+dice", "ce+focal"), help="loss (default ce, void pixels ignored)")
    p.add_argument("--sampler", choices=("balanced", "uniform"), help="patch sampler (default balanced)")
    p.add_argument("--alpha", type=float, help="power of the sampler's class area maps (default 4)")
    p.add_argument("--strength", type=float, help="share of class-balanced draws (default 1)")
    p.add_argument("--candidates", type=int, help="sampler keeps the best-balancing of this many positions (default 8)")
    p.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        default=None,
        help="no rotation/scale/flip/brightness/colour augmentation",
    )
    p.add_argument("--streams", type=int, help="sampler read tasks per epoch (default 2 per worker)")
    p.add_argument("--val-split", help="held-out split (default val/ if present, else test/)")
    p.add_argument("--void-border", type=int, help="validation leaves out this band around class boundaries")
    p.add_argument("--resume", help="checkpoint folder to continue from (OUT/last)")
    p.add_argument("--workers", type=int, help="data-parallel workers (default 1)")
    p.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker (AMP)")
    p.add_argument("--seed", type=int)
    p.add_argument("--window", type=int, help="inference window recorded in the model card (default 512)")


def run(cfg: TrainConfig) -> int:
    setup_logging()
    from engine.train.loop import TrainOptions, train

    print(f"checkpoint: {train(TrainOptions(**cfg.model_dump()))}")
    return 0


JOB = Job("train", add_arguments, run, description=__doc__, config=TrainConfig)

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
