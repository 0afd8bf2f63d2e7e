"""The prospectivity stack spec (``layers.json``, read by ``lode prospect stack``): the target grid
and its layers. Unknown keys are refused at every level, as are duplicate layer names."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

KINDS = ("geochem", "continuous", "categorical", "lines", "fault_raster")
POINT_SUFFIXES = (".csv", ".parquet", ".geoparquet")
"""Files of point samples (one row per sample), gridded by :mod:`engine.prospect.points`."""
POINT_KINDS = ("geochem", "continuous")
POINT_KEYS = ("column", "block", "max_distance")


def is_point_file(path: str) -> bool:
    return str(path).lower().endswith(POINT_SUFFIXES)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StackGrid(_Strict):
    """A north-up target grid: ``shape`` (rows, columns) cells of ``cell_size`` from (``west``, ``north``)."""

    shape: tuple[PositiveInt, PositiveInt]
    cell_size: PositiveFloat
    west: FiniteFloat
    north: FiniteFloat
    crs: str = Field(min_length=1)


class StackLayer(_Strict):
    """One source layer; ``path`` is relative to the spec's folder."""

    name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    kind: str = Field(description=f"one of {', '.join(KINDS)}")
    nodata: float | None = Field(default=None, description="no-data value (overrides the file's)")
    classes: list[int] | None = Field(default=None, description="class codes of a categorical layer")
    clr_group: str | None = Field(default=None, description="geochem layers sharing a group get centred log-ratios")
    crs: str | None = Field(default=None, description="the file's CRS when it states none")
    column: str | None = Field(default=None, description="point file: the value column (default: the layer's name)")
    block: PositiveFloat | None = Field(
        default=None, description="point file: block size of the sample medians, in grid cells (default 1)"
    )
    max_distance: PositiveFloat | None = Field(
        default=None,
        description="point file: cells farther than this from every sample, in grid cells, are no-data "
        "(default 3 times the samples' median spacing, at least 1)",
    )

    @model_validator(mode="after")
    def _point_keys(self) -> StackLayer:
        points = is_point_file(self.path)
        if points and self.kind not in POINT_KINDS:
            raise ValueError(f"point samples ({self.path}) can be {' or '.join(POINT_KINDS)} layers, not {self.kind}")
        extra = [k for k in POINT_KEYS if getattr(self, k) is not None]
        if extra and not points:
            raise ValueError(f"{', '.join(extra)} apply to point files ({', '.join(POINT_SUFFIXES)}) only")
        return self

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in KINDS:
            raise ValueError(f"unknown layer kind {v!r}; expected one of {KINDS}")
        return v


class StackSpec(_Strict):
    grid: StackGrid
    layers: list[StackLayer] = Field(min_length=1)
    deposits: str | None = Field(default=None, description="deposit CSV of the region (for lode prospect run)")

    @model_validator(mode="after")
    def _unique_names(self) -> StackSpec:
        first: dict[str, int] = {}
        for i, layer in enumerate(self.layers):
            if layer.name in first:
                raise ValueError(f"duplicate layer name {layer.name!r} (layers {first[layer.name]} and {i})")
            first[layer.name] = i
        return self


def _where(loc: tuple, data: Any) -> tuple[str, type[BaseModel]]:
    """The spec level an error location is in (text for the message) and that level's model."""
    if loc[:1] == ("grid",) and len(loc) > 1:
        return "grid", StackGrid
    if loc[:1] == ("layers",) and len(loc) > 2 and isinstance(loc[1], int):
        try:
            name = data["layers"][loc[1]]["name"]
        except (KeyError, IndexError, TypeError):
            name = None
        return (f"layer {name!r}" if isinstance(name, str) else f"layers[{loc[1]}]"), StackLayer
    return "spec", StackSpec


def spec_error_message(exc: ValidationError, data: Any) -> str:
    """One line for every problem of a spec: unknown keys named with the allowed ones."""
    parts = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where, model = _where(loc, data)
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc[-1]!r} in {where}; allowed: {', '.join(model.model_fields)}")
            continue
        field = ".".join(str(p) for p in loc[2 if model is StackLayer else 1 if model is StackGrid else 0 :])
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{where}{' ' + field if field else ''}: {msg}")
    return "; ".join(parts)
