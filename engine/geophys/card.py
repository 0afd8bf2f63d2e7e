"""The lineament U-Net's model card (torch-free: drivers read it from the checkpoint's JSON entry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

WHAT = "lineament model checkpoint"


class LineamentCard(BaseModel):
    """Everything needed to rebuild the network and run it on a survey grid."""

    task: str = "magnetic-lineament-axes"
    architecture: str = "Unet"
    encoder: str = "vgg16_bn"
    in_channels: int = Field(default=1, ge=1)
    channels: list[str] = Field(default_factory=lambda: ["anomaly"])
    classes: int = Field(default=1, ge=1)
    normalisation: str = "per-window: subtract mean, divide by standard deviation; NaN -> 0"
    window: int = Field(default=128, gt=0, description="window size in cells")
    threshold: float = Field(default=0.5, gt=0, lt=1, description="probability threshold of axis cells")
    trained: dict[str, Any] = Field(default_factory=dict, description="what training did (steps, loss, weights)")

    @model_validator(mode="after")
    def _channels_match(self) -> LineamentCard:
        if len(self.channels) != self.in_channels:
            raise ValueError(f"{len(self.channels)} channel names for in_channels={self.in_channels}")
        return self


def read_card(path: str | Path) -> LineamentCard:
    """The card of a lineament checkpoint, without torch; errors name the file."""
    from engine.io.checkpoint import read_card as read

    return read(path, LineamentCard, WHAT)
