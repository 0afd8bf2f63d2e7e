"""Shared by the colour and XPL benchmarks: whole-image prediction with the engine's predictor, and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def predict_image(checkpoint: str | Path, image: np.ndarray) -> np.ndarray:
    """Class codes ``(h, w)`` for an ``(h, w, c)`` uint8 image (one block = the whole image)."""
    import torch

    from engine.raster.grid import Block
    from engine.segment.checkpoint import load_checkpoint
    from engine.segment.predictor import BlockPredictor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, card = load_checkpoint(checkpoint, device)
    codes = np.array(card.class_set().codes, np.uint8)
    h, w = image.shape[:2]
    pred = BlockPredictor(model, card.mean, card.std, card.window, card.overlap, 8, device)
    idx, _ = pred.predict(
        np.ascontiguousarray(np.moveaxis(image, -1, 0)), (0, 0), (h, w), Block(0, 0, 0, h, w), len(codes)
    )
    return codes[idx]


def scores(checkpoint: str | Path, pairs: list[tuple[np.ndarray, np.ndarray]]):
    from engine.analyze.metrics import SegmentationScores
    from engine.segment.checkpoint import read_card

    codes = read_card(checkpoint).class_set().codes
    s = SegmentationScores.empty(codes)
    for img, truth in pairs:
        s.add(truth, predict_image(checkpoint, img))
    return s
