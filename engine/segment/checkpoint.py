"""Checkpoints: a state dict plus a model card that inference reads back alone.

A checkpoint also carries the model traced at its window size (TorchScript): inference
actors load that program with torch alone, without importing segmentation-models-pytorch,
timm and torchvision (several seconds per fresh process), and freeze it for the CPU.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import torch
from pydantic import BaseModel, Field, field_validator
from torch import nn

from engine.classes import ClassSet
from engine.errors import LodeInputError
from engine.segment.models import create_model


class ModelCard(BaseModel):
    """Everything needed to rebuild a model and run it on new images."""

    arch: str = "pspnet"
    encoder: str = "resnet18"
    classes: list[dict] = Field(description="ordered [{code, name, color}]; output channel i is classes[i]")
    in_channels: int = 3
    channels: list[str] = Field(default_factory=lambda: ["R", "G", "B"], description="input channel order")
    mean: list[float] = Field(default_factory=lambda: [0.5, 0.5, 0.5], description="per-channel mean on 0..1 scale")
    std: list[float] = Field(default_factory=lambda: [0.25, 0.25, 0.25], description="per-channel std on 0..1 scale")
    window: int = 512
    overlap: float = 0.25
    reference_colors: dict[str, list[float]] = Field(default_factory=dict,
                                                     description="mean linear-RGB colour per class code (colour "
                                                                 "calibration targets)")
    reference_gamma: float = Field(default=2.2, gt=0, description="gamma that linearised reference_colors")
    training: dict = Field(default_factory=dict)
    model_id: str = ""

    @field_validator("in_channels")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("in_channels must be positive")
        return v

    def class_set(self, source: str = "model card") -> ClassSet:
        return ClassSet.from_dicts(self.classes, name="model", source=source)


def _state_hash(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(path: str | Path, model: nn.Module, card: ModelCard) -> ModelCard:
    """Write ``{"state_dict", "card"}`` atomically; returns the card with its model id."""
    model = getattr(model, "module", model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    card = card.model_copy(update={"model_id": f"{card.arch}-{card.encoder}-{_state_hash(state)}"})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"state_dict": state, "card": card.model_dump(), "program": _trace(model, card)}, buf)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return card


def _trace(model: nn.Module, card: ModelCard) -> bytes:
    """The model traced on CPU at the card's window size, serialised (TorchScript)."""
    import copy

    cpu = copy.deepcopy(model).cpu().eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # smp's input-size checks become constants at the traced size; TorchScript is deprecated
        # in favour of torch.export/compile, whose loaders import the compiler stack (seconds).
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(cpu, torch.zeros(1, card.in_channels, card.window, card.window)), buf)
    return buf.getvalue()


def _read_blob(path: Path) -> dict:
    if not path.is_file():
        raise LodeInputError(path, "checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LodeInputError(path, f"not a Lode checkpoint: {exc}") from exc


def _read(path: Path) -> tuple[dict, ModelCard]:
    blob = _read_blob(path)
    try:
        card = ModelCard.model_validate(blob["card"])
        state = blob["state_dict"]
    except Exception as exc:
        raise LodeInputError(path, f"not a Lode checkpoint: {exc}") from exc
    card.class_set(source=str(path))
    if len(card.channels) != card.in_channels or len(card.mean) != card.in_channels or len(card.std) != card.in_channels:
        raise LodeInputError(path, f"model card channels/mean/std do not match in_channels={card.in_channels}")
    return blob, card


def read_card(path: str | Path) -> ModelCard:
    """The validated model card of a checkpoint, without building the model."""
    return _read(Path(path))[1]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model from a checkpoint; errors name the file."""
    path = Path(path)
    blob, card = _read(path)
    model = create_model(card.arch, card.encoder, card.in_channels, len(card.classes))
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise LodeInputError(path, f"state dict does not fit the model card: {exc}") from exc
    return model.to(device).eval(), card


def load_inference_model(path: str | Path, window: int, device: str | torch.device = "cpu"
                         ) -> tuple[nn.Module, ModelCard]:
    """The fastest exact form of a checkpoint's model for windows of ``window`` pixels.

    On the CPU, the traced program when the checkpoint has one for this window size,
    converted to channels-last and frozen (batch norm folded into the convolutions); it
    matches the eager model to float rounding. Otherwise (GPU, where AMP needs the eager
    model, or an older checkpoint) the rebuilt eager model, channels-last.
    """
    path = Path(path)
    device = torch.device(device)
    blob, card = _read(path)
    if device.type != "cpu" or "program" not in blob or window != card.window:
        model, card = load_checkpoint(path, device)
        return model.to(memory_format=torch.channels_last), card
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation of TorchScript: see _trace
        try:
            program = torch.jit.load(io.BytesIO(blob["program"]), map_location="cpu")
        except Exception as exc:
            raise LodeInputError(path, f"unreadable inference program: {exc}") from exc
        return torch.jit.freeze(program.eval().to(memory_format=torch.channels_last)), card
