"""The engine's option types and the job configs they are built from (``Options(**config.model_dump())``
in ``jobs/``) name the same fields with the same defaults."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic_core import PydanticUndefined

from engine.segment.pipeline import SegmentOptions
from engine.train.loop import TrainOptions
from schemas.config import SegmentConfig, TrainConfig


@pytest.mark.parametrize("options, config", [(SegmentOptions, SegmentConfig), (TrainOptions, TrainConfig)])
def test_options_mirror_the_job_config(options, config):
    fields = {f.name: f.default for f in dataclasses.fields(options)}
    defaults = {name: f.default for name, f in config.model_fields.items()}
    assert list(fields) == list(defaults)
    required = "<required>"
    assert {k: required if v is dataclasses.MISSING else v for k, v in fields.items()} == {
        k: required if v is PydanticUndefined else v for k, v in defaults.items()
    }


def test_a_config_converts_to_options():
    cfg = TrainConfig(data="d", out="o", steps=7, epochs=2, classes=[1, 2])
    opts = TrainOptions(**cfg.model_dump())
    assert (opts.steps_per_epoch, opts.classes, opts.sampler) == (4, [1, 2], "balanced")
