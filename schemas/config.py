"""Typed job configs (pydantic): what a job's ``run`` receives and ``lode <job> --config FILE`` validates.

Jobs whose engine consumes a typed config (segment, train) have hand-written models here, named by
their ``Job(config=...)``; every other job's model is derived from its argparse options by
:func:`model_from_parser`, so the CLI and the config file can never disagree.
"""

from __future__ import annotations

import argparse
import json
import typing
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, create_model, field_validator


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML config file from a local path or any fsspec URI (``s3://``, ``file://``, ``memory://``)."""
    import fsspec
    import yaml

    from engine.errors import LodeInputError

    try:
        with fsspec.open(str(path), "rt") as f:
            text = f.read()
    except (OSError, ValueError) as exc:
        raise LodeInputError(path, f"cannot read config file: {exc}") from exc
    try:
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise LodeInputError(path, f"config file is not valid JSON/YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LodeInputError(path, f"config file must hold a mapping of options, got {type(data).__name__}")
    return data


class JobConfig(BaseModel):
    """A job's config: unknown options are refused."""

    model_config = ConfigDict(extra="forbid")


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
        default="none", description="also store class probabilities (uint8 = quantised ×255)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_actors: int | None = Field(default=None, ge=1, description="segmentation actors (default: GPUs or 1)")
    threads: int | None = Field(default=None, ge=1, description="torch threads per CPU actor")
    copy_image: bool = Field(default=True, description="write the input image into the output store")
    read_ahead: bool = Field(
        default=True,
        description="on CPU, read blocks in tasks ahead of the model actor (the first while the actor starts); "
        "off: the actor reads each block itself, with no copy through the object store",
    )
    max_blocks: int | None = Field(default=None, ge=1, description="stop after this many blocks (for testing)")
    colour: Literal["none", "per-image", "series", "annotated"] = Field(
        default="none",
        description="colour calibration before segmentation: a ΔE2000-fitted matrix per section "
        "(annotated: only the annotated ones) or one for the whole series, fitted to the model card's "
        "reference colours",
    )
    annotations: str | None = Field(
        default=None,
        description="folder of sparse annotation masks <section>.png (class codes, 255 = not annotated) for --colour",
    )
    xpl: str | None = Field(
        default=None,
        description="folder of <section>/ subfolders of crossed-polar captures, "
        "registered to PPL and stacked as extra channels",
    )
    ccm: str | None = Field(
        default=None,
        description="saved colour matrices (ccm.json of lode calibrate colour) applied before segmentation: "
        "its one matrix to every section, else each section's own by section id",
    )
    records: str | None = Field(
        default=None, description="folder of the run manifest and per-block records (default: out)"
    )

    @field_validator("window")
    @classmethod
    def _window(cls, v: int | None) -> int | None:
        if v is not None and v < 32:
            raise ValueError("window must be at least 32 px")
        return v

    @field_validator("block")
    @classmethod
    def _block(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) < 16:
            raise ValueError("block sides must be at least 16 px")
        return v


class TrainConfig(JobConfig):
    """Data-parallel training (Ray Train) on class-balanced, augmented patches of a LumenStone-layout folder."""

    data: str = Field(description="LumenStone-layout folder (imgs/, masks/ with train/ and test/ or val/)")
    out: str = Field(description="output directory: model.pt (best by validation mIoU), last/, curves")
    arch: str = "pspnet"
    encoder: str = "resnet18"
    classes: list[int] | None = Field(
        default=None, description="class codes; default: codes found in the training and held-out masks"
    )
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


def _value_type(action: argparse.Action) -> Any:
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return Literal[tuple(action.choices)]
    fn = action.type
    if fn is None:
        return str
    if fn in (int, float, str, Path):
        return fn
    try:
        ret = typing.get_type_hints(fn).get("return", Any)
    except Exception:
        ret = Any
    # a config file may hold the typed value or the text the CLI takes ("9x6"), which is parsed here
    return Annotated[Union[ret, str], BeforeValidator(partial(_parse_text, fn))]  # noqa: UP007 - ret is a runtime value


def _parse_text(fn: Any, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return fn(value)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(str(exc)) from None


def _field(action: argparse.Action) -> tuple[Any, Any]:
    description = None if action.help == argparse.SUPPRESS else action.help
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        kind: Any = bool
    else:
        kind = _value_type(action)
        if isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*"):
            kind = list[kind]
        elif isinstance(action.nargs, int):
            kind = tuple[(kind,) * action.nargs]  # type: ignore[misc]
    default = action.default
    if isinstance(default, tuple):
        default = list(default)
    required = action.required and action.nargs not in ("?", "*")
    if required:
        return kind, Field(description=description)
    if default is None:
        kind = kind | None
    return kind, Field(default=default, description=description)


def _parser_fields(parser: argparse.ArgumentParser) -> dict[str, tuple[Any, Any]]:
    return {
        a.dest: _field(a)
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction))
        and a.dest not in ("config", argparse.SUPPRESS)
    }


def model_from_parser(job: str, parser: argparse.ArgumentParser) -> type[BaseModel]:
    """The pydantic model of a job's options: one field per argparse option (same name, type,
    choices, default, help), and for jobs with actions a union discriminated by the action."""
    title = "".join(p.capitalize() for p in job.split("_"))
    fields = _parser_fields(parser)
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return create_model(
            f"{title}Config",
            __base__=JobConfig,
            __doc__=parser.description,  # type: ignore[call-overload]
            **fields,
        )
    sub = subs[0]
    variants = []
    for choice, subparser in sub.choices.items():
        vfields = {**fields, **_parser_fields(subparser), sub.dest: (Literal[choice], Field(description=f"{sub.dest}"))}
        name = title + "".join(p.capitalize() for p in choice.split("-")) + "Config"
        variants.append(
            create_model(
                name,
                __base__=JobConfig,
                __doc__=subparser.description,  # type: ignore[call-overload]
                **vfields,
            )
        )
    # a union built at run time: Union[tuple] unpacks it, which the | operator cannot, and mypy cannot check
    return RootModel[Annotated[Union[tuple(variants)], Field(discriminator=sub.dest)]]  # type: ignore[misc,return-value]  # noqa: UP007
