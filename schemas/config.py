"""Typed job configs (pydantic); ``lode <job> --config FILE`` validates against these."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class JobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "JobConfig":
        data = json.loads(Path(path).read_text()) if path else {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)


class SegmentConfig(JobConfig):
    """Blocked sliding-window segmentation of panoramas or image folders."""

    inputs: list[str] = Field(min_length=1, description="OME-Zarr stores, image folders or image files")
    out: str = Field(description="output directory (OME-Zarr store, manifest, status)")
    checkpoint: str = Field(description="model checkpoint (.pt with model card)")
    window: int | None = Field(default=None, description="window size; default from the model card")
    overlap: float | None = Field(default=None, ge=0.0, lt=1.0, description="window overlap; default from the card")
    batch_size: int = Field(default=8, ge=1, description="windows per forward pass")
    block: tuple[int, int] | None = Field(default=None, description="output block (= shard) size; default auto")
    chunk: int = Field(default=512, ge=16, description="zarr chunk edge inside shards")
    levels: int = Field(default=3, ge=1, le=8, description="pyramid levels of the output")
    probabilities: Literal["none", "uint8", "float16", "float32"] = Field(
        default="none", description="also store class probabilities (uint8 = quantised ×255)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_actors: int | None = Field(default=None, ge=1, description="segmentation actors (default: GPUs or 1)")
    threads: int | None = Field(default=None, ge=1, description="torch threads per CPU actor")
    copy_image: bool = Field(default=True, description="write the input image into the output store")
    max_blocks: int | None = Field(default=None, ge=1, description="stop after this many blocks (for testing)")

    @field_validator("window")
    @classmethod
    def _window(cls, v: int | None) -> int | None:
        if v is not None and v < 32:
            raise ValueError("window must be at least 32 px")
        return v


class TrainConfig(JobConfig):
    """Data-parallel training (Ray Train) on class-balanced, augmented patches of a LumenStone-layout folder."""

    data: str = Field(description="LumenStone-layout folder (imgs/, masks/ with train/ and test/ or val/)")
    out: str = Field(description="output directory: model.pt (best by validation mIoU), last/, curves")
    arch: str = "pspnet"
    encoder: str = "resnet18"
    classes: list[int] | None = Field(default=None, description="class codes; default: codes found in the masks")
    patch: int = Field(default=256, ge=32)
    batch_size: int = Field(default=8, ge=1, description="global batch size (split equally over workers)")
    steps: int = Field(default=200, ge=1, description="optimizer steps in all (split equally over epochs)")
    epochs: int = Field(default=1, ge=1, description="validation + checkpoint points")
    lr: float = 1e-3
    plateau_patience: int = Field(default=2, ge=0, description="epochs without improvement before lr is halved")
    loss: Literal["ce", "ce+dice", "ce+focal"] = "ce"
    sampler: Literal["balanced", "uniform"] = "balanced"
    alpha: float = Field(default=4.0, gt=0, description="power of the sampler's class area maps")
    candidates: int = Field(default=8, ge=1, description="sampler keeps the best-balancing of this many positions")
    strength: float = Field(default=1.0, ge=0, le=1, description="share of balanced draws")
    image_exponent: float = Field(default=1.0, description="image choice ∝ its class content ** this")
    map_downscale: int = Field(default=8, ge=1, description="sampler maps are built this much coarser")
    augment: bool = True
    streams: int | None = Field(default=None, ge=1, description="sampler read tasks per epoch (default 2 per worker)")
    val_split: str | None = Field(default=None, description="held-out split (default val/ if present, else test/)")
    val_images: int | None = Field(default=None, ge=1, description="validate on the first N held-out images")
    void_border: int = Field(default=0, ge=0, description="validation leaves out this band around class boundaries")
    resume: str | None = Field(default=None, description="checkpoint folder (e.g. OUT/last) to continue from")
    workers: int = Field(default=1, ge=1)
    gpu: bool = False
    seed: int = 0
    window: int = Field(default=512, ge=32, description="inference window recorded in the model card")
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.steps // self.epochs)


CONFIGS: dict[str, type[JobConfig]] = {"segment": SegmentConfig, "train": TrainConfig}
