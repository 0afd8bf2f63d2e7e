"""The segmentation model card: everything needed to rebuild a model and run it on new images.

Checkpoints are Lode's one format (:mod:`engine.io.checkpoint`): the card is read from the
archive's JSON entry without torch, so a job's driver and its read and write tasks stay free of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, field_validator

from engine.classes import ClassSet
from engine.errors import LodeInputError

if TYPE_CHECKING:
    import numpy as np


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
    reference_colors: dict[str, list[float]] = Field(
        default_factory=dict, description="mean linear-RGB colour per class code (colour calibration targets)"
    )
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


WHAT = "Lode checkpoint"


def validate_card(raw: object, path: str | Path) -> ModelCard:
    """A card from a checkpoint, checked for consistency; errors name the checkpoint."""
    from engine.io.checkpoint import validate

    card = validate(raw, ModelCard, path, WHAT)
    card.class_set(source=str(path))
    if (
        len(card.channels) != card.in_channels
        or len(card.mean) != card.in_channels
        or len(card.std) != card.in_channels
    ):
        raise LodeInputError(path, f"model card channels/mean/std do not match in_channels={card.in_channels}")
    return card


def read_card(path: str | Path) -> ModelCard:
    """The validated model card of a checkpoint, without building the model or importing torch
    (:func:`engine.io.checkpoint.raw_card`); ``path`` is a local path or URI."""
    from engine.io.checkpoint import raw_card

    return validate_card(raw_card(path, WHAT), path)


def reference_from_file(path: str | Path) -> dict[int, np.ndarray]:
    """Reference colours from a checkpoint's model card (``.pt``) or a JSON ``{"code": [r, g, b]}`` (linear)."""
    from engine.calibrate.colour import reference_from_card

    p = Path(path)
    if p.suffix == ".pt":
        card = read_card(p)
        if not card.reference_colors:
            raise LodeInputError(p, "model card carries no reference colours (retrain, or give a JSON file)")
        return reference_from_card(card.reference_colors)
    try:
        blob = json.loads(p.read_text())
        return reference_from_card(blob.get("reference_colors", blob))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise LodeInputError(p, f"cannot read reference colours: {exc}") from exc


def check_checkpoint(path: str | Path) -> ModelCard:
    """Read the card and check the whole checkpoint (``torchfile.verify_in_child``: every tensor
    against the checkpoint's list, then ``checkpoint.verify_checkpoint``'s finite weights and dry
    forward pass in a short child process), so that this process stays free of torch. A file
    already checked (same path, size and modification time) is not checked again. Raises
    ``LodeInputError`` naming the file."""
    from engine.io import fs
    from engine.io.torchfile import verify_in_child

    card = read_card(path)
    if fs.is_uri(path):
        return card  # fetched whole by each actor; its loader checks it there
    verify_in_child(fs.local(path), "engine.segment.checkpoint", card.model_id, "Lode checkpoint")
    return card
