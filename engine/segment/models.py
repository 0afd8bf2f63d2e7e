"""Segmentation model factory over segmentation-models-pytorch architectures."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engine.errors import LodeInputError

ARCHITECTURES = ("pspnet", "unet", "unetplusplus", "fpn", "upernet", "deeplabv3plus", "linknet", "manet")


def create_model(
    arch: str = "pspnet",
    encoder: str = "resnet18",
    in_channels: int = 3,
    num_classes: int = 15,
    encoder_weights: str | Path | None = None,
) -> nn.Module:
    """Build an smp model; never downloads weights.

    Args:
        arch: one of ``ARCHITECTURES`` (case-insensitive).
        encoder: any smp encoder name (``resnet18``, ``resnet34``, ``vgg16``, ...).
        in_channels: input channels (3 for PPL RGB, more with XPL channels).
        num_classes: output channels, one per class of the class set.
        encoder_weights: ``None`` (random init) or a local file with an encoder state dict.
    """
    import segmentation_models_pytorch as smp

    key = arch.lower()
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
    model = smp.create_model(
        key, encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes
    )
    if encoder_weights is not None:
        path = Path(encoder_weights)
        if not path.is_file():
            raise LodeInputError(path, "encoder weights file not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = model.encoder.load_state_dict(state, strict=False)
        if len(missing) == len(model.encoder.state_dict()):
            raise LodeInputError(path, "no encoder weight matched the model's encoder")
    return model
