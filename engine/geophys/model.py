"""The lineament U-Net (smp, VGG-16 encoder by default), its input normalisation and checkpoints
(Lode's one format, :mod:`engine.io.checkpoint`, with a :class:`~engine.geophys.card.LineamentCard`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.errors import LodeInputError
from engine.geophys.card import WHAT, LineamentCard
from engine.io.checkpoint import load_weights, read_checkpoint, write_checkpoint


def build_model(card: LineamentCard) -> torch.nn.Module:
    """The (untrained) network a model card describes, from Lode's one factory
    (:func:`engine.nets.build`); never downloads weights."""
    from engine.nets import build

    return build(card.architecture, encoder=card.encoder, in_channels=card.in_channels, classes=card.classes)


def normalise_windows(x: torch.Tensor) -> torch.Tensor:
    """Per-window normalisation of a ``(B, C, H, W)`` batch: zero mean, unit std over finite cells, NaN -> 0."""
    finite = torch.isfinite(x)
    n = finite.sum(dim=(-2, -1), keepdim=True).clamp_min(1)
    z = torch.where(finite, x, torch.zeros_like(x))
    mean = z.sum(dim=(-2, -1), keepdim=True) / n
    var = (torch.where(finite, x - mean, torch.zeros_like(x)) ** 2).sum(dim=(-2, -1), keepdim=True) / n
    return torch.where(finite, (x - mean) / (var.sqrt() + 1e-6), torch.zeros_like(x))


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: LineamentCard) -> Path:
    """Write the checkpoint whole, with the network traced at the card's window as ``program``
    (:mod:`engine.nets.program`); returns its path."""
    from engine.nets.program import trace

    model = getattr(model, "module", model)
    write_checkpoint(path, model.state_dict(), card, {"program": trace(model, card.in_channels, card.window)})
    return Path(path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, LineamentCard]:
    """Load a lineament checkpoint (memory-mapped, built on the meta device: one copy of the
    weights); returns ``(model in eval mode, card)``."""
    path = Path(path)
    if not path.is_file():
        raise LodeInputError(path, "no such model checkpoint")
    blob, card = read_checkpoint(path, LineamentCard, WHAT, mmap=True)
    with torch.device("meta"):
        model = build_model(card)
    load_weights(model, blob["state_dict"], path, WHAT, assign=True)
    return model.to(device).eval(), card


def load_inference_model(path: str | Path, device: str) -> torch.nn.Module:
    """The checkpoint's network for inference on ``device``: on the CPU its traced program when it
    has one (torch alone, the same output as the rebuilt network), else the rebuilt network."""
    if device != "cpu":
        return load_checkpoint(path, device)[0]
    blob, _ = read_checkpoint(path, LineamentCard, WHAT, mmap=True)
    if "program" not in blob:
        return load_checkpoint(path, device)[0]
    from engine.nets.program import load_program

    return load_program(blob["program"], path)


def verify_checkpoint(path: str | Path) -> LineamentCard:
    """Load the whole checkpoint (every tensor against the model its card builds) and run one
    blank window through it: weights and output must be finite. Returns the card; raises
    ``LodeInputError`` naming the file."""
    model, card = load_checkpoint(path)
    if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
        raise LodeInputError(path, "weights hold NaN or infinite values")
    with torch.no_grad():
        out = model(torch.zeros(1, card.in_channels, card.window, card.window))
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
