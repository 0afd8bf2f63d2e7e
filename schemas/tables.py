"""pyarrow schemas of the tables written by ``lode analyze``.

``grains.parquet`` holds one row per grain (a connected region of one mineral);
``statistics.parquet`` is a long table: one row per (scope, section, statistic,
class[, other class | size class]) with a single ``value``.
"""

from __future__ import annotations

import pyarrow as pa

GRAINS_SCHEMA = pa.schema(
    [
        pa.field("section", pa.string(), nullable=False),
        pa.field("grain_id", pa.int64(), nullable=False),
        pa.field("class_code", pa.uint8(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("area_px", pa.int64(), nullable=False),
        pa.field("area_um2", pa.float64()),
        pa.field("ecd_px", pa.float64(), nullable=False),
        pa.field("ecd_um", pa.float64()),
        pa.field("perimeter_px", pa.float64(), nullable=False),
        pa.field("perimeter_um", pa.float64()),
        pa.field("feret_max_px", pa.float64(), nullable=False),
        pa.field("feret_min_px", pa.float64(), nullable=False),
        pa.field("feret_max_um", pa.float64()),
        pa.field("feret_min_um", pa.float64()),
        pa.field("centroid_y_px", pa.float64(), nullable=False),
        pa.field("centroid_x_px", pa.float64(), nullable=False),
        pa.field("bbox_y0", pa.int64(), nullable=False),
        pa.field("bbox_x0", pa.int64(), nullable=False),
        pa.field("bbox_y1", pa.int64(), nullable=False),
        pa.field("bbox_x1", pa.int64(), nullable=False),
        pa.field("touches_edge", pa.bool_(), nullable=False),
        pa.field("touches_ore", pa.bool_(), nullable=False),
        pa.field("pixel_size_um", pa.float64()),
    ],
    metadata={
        "description": "one row per grain; bbox is half-open [y0, y1) x [x0, x1) in level-0 pixels; "
        "perimeter is the 4-direction Crofton estimate; Feret diameters span pixel corners; "
        "touches_ore: the grain shares a boundary with another ore mineral; "
        "*_um columns are null when the section has no physical pixel size",
    },
)

STATISTICS_SCHEMA = pa.schema(
    [
        pa.field("scope", pa.string(), nullable=False),
        pa.field("section", pa.string()),
        pa.field("statistic", pa.string(), nullable=False),
        pa.field("class_code", pa.int16(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("other_code", pa.int16()),
        pa.field("other_name", pa.string()),
        pa.field("size_lo", pa.float64()),
        pa.field("size_hi", pa.float64()),
        pa.field("unit", pa.string()),
        pa.field("value", pa.float64(), nullable=False),
    ],
    metadata={
        "description": "scope is 'section' (section set) or 'collection' (section null). statistic is one of "
        "area_px, area_fraction, weight_percent, density (the g/cm3 that weight_percent used), grain_count, "
        "mean_ecd, size_count, size_area_fraction (size_lo <= ECD < size_hi), boundary_length (shared boundary "
        "of the class/other pair, each unordered pair once with class_code < other_code), liberation (share of "
        "the class's grain area in grains touching no other ore mineral). unit: every row has one: px or um for "
        "lengths and ECDs, 1 for fractions, % for weight percent, g/cm3 for densities, count for grain counts; "
        "size rows give the unit of size_lo/size_hi",
    },
)

STATISTICS = (
    "area_px",
    "area_fraction",
    "weight_percent",
    "density",
    "grain_count",
    "mean_ecd",
    "size_count",
    "size_area_fraction",
    "boundary_length",
    "liberation",
)

QUALITY_SCHEMA = pa.schema(
    [
        pa.field("section", pa.string(), nullable=False),
        pa.field("frames_placed", pa.int32()),
        pa.field("frames_total", pa.int32()),
        pa.field("stitch_rms_px", pa.float64()),
        pa.field("flagged_frames", pa.int32()),
        pa.field("flagged", pa.string()),
        pa.field("pixel_size_um", pa.float64()),
        pa.field("colour_mode", pa.string()),
        pa.field("delta_e_before", pa.float64()),
        pa.field("delta_e_after", pa.float64()),
    ],
    metadata={
        "description": "One row per section of what its stitching and colour calibration recorded in the store. "
        "frames_placed, frames_total, stitch_rms_px (RMS of the alignment residuals), flagged_frames (count) and "
        "flagged (their names, comma-separated), pixel_size_um: the stitch report (attrs lode.stitch); "
        "colour_mode, delta_e_before (mean CIEDE2000 of the fit's colour pairs uncorrected) and delta_e_after "
        "(after the fitted matrix): the colour calibration (attrs colour_calibration). Null where the section "
        "carries no such record (not stitched by lode, no colour calibration, a matrix saved before "
        "delta_e_before was recorded)",
    },
)
