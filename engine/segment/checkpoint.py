"""Checkpoints: a state dict plus a model card that inference reads back alone."""

from __future__ import annotations

import hashlib
import io
import os
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
    torch.save({"state_dict": state, "card": card.model_dump()}, buf)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return card


def _read(path: Path) -> tuple[dict, ModelCard]:
    if not path.is_file():
        raise LodeInputError(path, "checkpoint not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        card = ModelCard.model_validate(blob["card"])
        state = blob["state_dict"]
    except Exception as exc:
        raise LodeInputError(path, f"not a Lode checkpoint: {exc}") from exc
    card.class_set(source=str(path))
    if len(card.channels) != card.in_channels or len(card.mean) != card.in_channels or len(card.std) != card.in_channels:
        raise LodeInputError(path, f"model card channels/mean/std do not match in_channels={card.in_channels}")
    return state, card


def read_card(path: str | Path) -> ModelCard:
    """The validated model card of a checkpoint, without building the model."""
    return _read(Path(path))[1]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model from a checkpoint; errors name the file."""
    path = Path(path)
    state, card = _read(path)
    model = create_model(card.arch, card.encoder, card.in_channels, len(card.classes))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise LodeInputError(path, f"state dict does not fit the model card: {exc}") from exc
    return model.to(device).eval(), card
