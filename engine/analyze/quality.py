"""The quality record of each section: what its stitching (``attrs["lode"]["stitch"]``) and colour
calibration (``attrs["colour_calibration"]``) wrote into its image group. The rows of
``quality.parquet`` and of the report's Quality table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from engine.analyze.sections import Section
from engine.io.layout import attrs_of


def quality_row(section: Section) -> dict[str, Any]:
    """One row of ``QUALITY_SCHEMA``: None for every value the section does not carry."""
    attrs = attrs_of(section.image)
    stitch = attrs.get("lode", {}).get("stitch") or {}
    colour = attrs.get("colour_calibration") or {}
    info = colour.get("info", {})
    flagged = stitch.get("flagged")
    return {
        "section": section.name,
        "frames_placed": stitch.get("frames_placed"),
        "frames_total": stitch.get("frames_total"),
        "stitch_rms_px": stitch.get("rms_px"),
        "flagged_frames": None if flagged is None else len(flagged),
        "flagged": None if flagged is None else ", ".join(flagged),
        "pixel_size_um": stitch.get("pixel_size_um"),
        "colour_mode": colour.get("mode"),
        "delta_e_before": info.get("mean_delta_e_before"),
        "delta_e_after": info.get("mean_delta_e_fit"),
    }


def quality_table(sections: Sequence[Section]) -> pd.DataFrame:
    """Every section's :func:`quality_row`, in the columns of ``QUALITY_SCHEMA``."""
    from schemas.tables import QUALITY_SCHEMA

    return pd.DataFrame([quality_row(s) for s in sections], columns=QUALITY_SCHEMA.names)
