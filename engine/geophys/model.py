"""The lineament U-Net (smp, VGG-16 encoder by default), its input normalisation and checkpoints.

A checkpoint is one ``torch.save`` file holding ``{"card": dict, "state_dict": dict}``; the card
is JSON-able (architecture, encoder, input channels, normalisation, window) so a checkpoint
loads with ``weights_only=True`` and rebuilds its own model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from engine.errors import LodeInputError
from engine.io.atomic import atomic_path, atomic_write_text
from engine.io.torchfile import entries, load_torch, tensor_list

DEFAULT_CARD: dict[str, Any] = {
    "task": "magnetic-lineament-axes",
    "architecture": "Unet",
    "encoder": "vgg16_bn",
    "in_channels": 1,
    "channels": ["anomaly"],
    "classes": 1,
    "normalisation": "per-window: subtract mean, divide by standard deviation; NaN -> 0",
    "window": 128,
    "threshold": 0.5,
}


def build_model(card: dict[str, Any]) -> torch.nn.Module:
    """Build the (untrained) network a model card describes, with the segmentation model factory
    (:func:`engine.segment.models.create_model`); never downloads weights."""
    from engine.segment.models import create_model

    return create_model(card["architecture"], card["encoder"], card["in_channels"], card["classes"])


def normalise_windows(x: torch.Tensor) -> torch.Tensor:
    """Per-window normalisation of a ``(B, C, H, W)`` batch: zero mean, unit std over finite cells, NaN -> 0."""
    finite = torch.isfinite(x)
    n = finite.sum(dim=(-2, -1), keepdim=True).clamp_min(1)
    z = torch.where(finite, x, torch.zeros_like(x))
    mean = z.sum(dim=(-2, -1), keepdim=True) / n
    var = (torch.where(finite, x - mean, torch.zeros_like(x)) ** 2).sum(dim=(-2, -1), keepdim=True) / n
    return torch.where(finite, (x - mean) / (var.sqrt() + 1e-6), torch.zeros_like(x))


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: dict[str, Any]) -> Path:
    """Write the checkpoint atomically (and ``<path>.json`` with the card beside it)."""
    path = Path(path)
    text = json.dumps(card, indent=2)
    with atomic_path(path) as tmp:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"card": card, "state_dict": state, "tensors": tensor_list(state)}, tmp)
    atomic_write_text(path.with_suffix(path.suffix + ".json"), text)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns ``(model in eval mode, card)``."""
    path = Path(path)
    if not path.is_file():
        raise LodeInputError(path, "no such model checkpoint")
    what = "lineament model checkpoint"
    blob = entries(load_torch(path, path, what, mmap=True), path, what, ("card", "state_dict"))
    try:
        card = dict(blob["card"])
        with torch.device("meta"):
            model = build_model(card)
        model.load_state_dict(blob["state_dict"], assign=True)
    except Exception as exc:  # noqa: BLE001 - a checkpoint that does not load is bad input
        raise LodeInputError(path, f"not a {what}: {' '.join(str(exc).split())}") from exc
    return model.to(device).eval(), card


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load the whole checkpoint (every tensor against the model its card builds) and run one
    blank window through it: weights and output must be finite. Returns the card; raises
    ``LodeInputError`` naming the file."""
    model, card = load_checkpoint(path)
    if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
        raise LodeInputError(path, "weights hold NaN or infinite values")
    window = int(card["window"])
    with torch.no_grad():
        out = model(torch.zeros(1, int(card.get("in_channels", 1)), window, window))
    if not torch.isfinite(out).all():
        raise LodeInputError(path, "the model gives non-finite output on a blank window")
    return card


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE plus soft Dice (batch-global), the thin-structure loss."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return bce + dice


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


if __name__ == "__main__":
    from engine.io.torchfile import verify_main

    verify_main(verify_checkpoint)
