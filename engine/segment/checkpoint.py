"""Checkpoints: a state dict plus a model card that inference reads back alone.

A checkpoint also carries the model traced at its window size (TorchScript): inference
actors load that program with torch alone, without importing segmentation-models-pytorch,
timm and torchvision (several seconds per fresh process), and freeze it for the CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from engine.errors import LodeInputError
from engine.io.checkpoint import load_weights, read_checkpoint, write_checkpoint
from engine.io.torchfile import check_tensors
from engine.nets import build
from engine.nets.program import load_program, trace
from engine.segment.card import WHAT, ModelCard, read_card, validate_card

__all__ = [
    "ModelCard",
    "read_card",
    "save_checkpoint",
    "load_checkpoint",
    "load_inference_model",
    "verify_checkpoint",
]


def _state_hash(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(path: str | Path, model: nn.Module, card: ModelCard) -> ModelCard:
    """Write the checkpoint (:func:`engine.io.checkpoint.write_checkpoint`, with the traced program
    as the extra entry ``program``); returns the card with its model id."""
    model = getattr(model, "module", model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    card = card.model_copy(update={"model_id": f"{card.arch}-{card.encoder}-{_state_hash(state)}"})
    write_checkpoint(path, state, card, {"program": trace(model, card.in_channels, card.window)})
    return card


def _read(path: str) -> tuple[dict, ModelCard]:
    blob, _ = read_checkpoint(path, ModelCard, WHAT)
    return blob, validate_card(blob["card"], path)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict (its card checked)."""
    return _read(str(path))[0]["state_dict"]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model from a checkpoint (local path or URI); errors name the file."""
    path = str(path)
    blob, card = _read(path)
    model = build(card.arch, encoder=card.encoder, in_channels=card.in_channels, classes=len(card.classes))
    load_weights(model, blob["state_dict"], path, WHAT)
    return model.to(device).eval(), card


def verify_checkpoint(path: str | Path) -> ModelCard:
    """Check a checkpoint whole: its card, every tensor's presence and shape against the model the
    card describes (for checkpoints with a traced program, against the program's own parameters,
    which needs no model library), and a dry forward pass on one window of the program and the
    weights. Raises ``LodeInputError`` naming the file."""
    path = str(path)
    blob, card = _read(path)
    state = blob["state_dict"]
    x = torch.zeros(1, card.in_channels, card.window, card.window)
    want = (1, len(card.classes), card.window, card.window)
    if "program" in blob:
        program = load_program(blob["program"], path)
        check_tensors(state, {k: list(v.shape) for k, v in program.state_dict().items()}, path)
        if not all(torch.is_floating_point(v) <= bool(torch.isfinite(v).all()) for v in state.values()):
            raise LodeInputError(path, "weights hold NaN or infinite values")
        with torch.no_grad():
            program.load_state_dict(state)
            out = program(x)
    else:
        model, card = load_checkpoint(path)
        with torch.no_grad():
            out = model(x)
    if tuple(out.shape) != want or not bool(torch.isfinite(out).all()):
        raise LodeInputError(
            path,
            f"a dry forward pass on one window gave {tuple(out.shape)} "
            f"{'non-finite ' if not bool(torch.isfinite(out).all()) else ''}output, "
            f"expected {want}",
        )
    return card


def load_inference_model(
    path: str | Path, window: int, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelCard]:
    """The fastest exact form of a checkpoint's model for windows of ``window`` pixels.

    On the CPU, the traced program when the checkpoint has one for this window size,
    converted to channels-last and frozen (batch norm folded into the convolutions); it
    matches the eager model to float rounding. Otherwise (GPU, where AMP needs the eager
    model, or an older checkpoint) the rebuilt eager model, channels-last.
    """
    path = str(path)
    device = torch.device(device)
    blob, card = _read(path)
    if device.type != "cpu" or "program" not in blob or window != card.window:
        model, card = load_checkpoint(path, device)
        return model.to(memory_format=torch.channels_last), card
    program = load_program(blob["program"], path)
    return torch.jit.freeze(program.to(memory_format=torch.channels_last)), card


if __name__ == "__main__":
    from engine.io.torchfile import verify_main

    verify_main(verify_checkpoint)
