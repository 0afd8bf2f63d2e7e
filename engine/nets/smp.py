"""The segmentation-models-pytorch architectures Lode trains (mineral segmentation, lineament axes)."""

from __future__ import annotations

from torch import nn

ARCHITECTURES = ("pspnet", "unet", "unetplusplus", "fpn", "upernet", "deeplabv3plus", "linknet", "manet")


def create_smp(arch: str, encoder: str = "resnet18", in_channels: int = 3, classes: int = 15) -> nn.Module:
    """An smp network with randomly initialised weights; never downloads any.

    Args:
        arch: one of ``ARCHITECTURES`` (case-insensitive).
        encoder: any smp encoder name (``resnet18``, ``vgg16_bn``, ``tu-test_resnet``, ...).
        in_channels: input channels (3 for PPL RGB, more with XPL channels, 1 for a survey grid).
        classes: output channels, one per class.
    """
    import segmentation_models_pytorch as smp

    key = arch.lower()
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
    return smp.create_model(key, encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=classes)
