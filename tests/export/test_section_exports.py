"""QuPath GeoJSON detections and OME-TIFF label pyramids of an analysed store, against its truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely.geometry
import tifffile
import zarr

from engine.analyze.collection import analyze_store
from engine.classes import LUMENSTONE
from engine.export.sections import export_sections
from tests.analyze.synthetic_sections import place_grains, write_store

GEOJSON_SCHEMA = {  # RFC 7946 FeatureCollection of Polygon / MultiPolygon features (the parts used here)
    "$defs": {
        "position": {"type": "array", "minItems": 2, "maxItems": 3, "items": {"type": "number"}},
        "ring": {"type": "array", "minItems": 4, "items": {"$ref": "#/$defs/position"}},
        "polygon": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/ring"}},
        "geometry": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type", "coordinates"],
                    "properties": {"type": {"const": "Polygon"}, "coordinates": {"$ref": "#/$defs/polygon"}},
                },
                {
                    "type": "object",
                    "required": ["type", "coordinates"],
                    "properties": {
                        "type": {"const": "MultiPolygon"},
                        "coordinates": {"type": "array", "items": {"$ref": "#/$defs/polygon"}},
                    },
                },
            ]
        },
    },
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "geometry", "properties"],
                "properties": {
                    "type": {"const": "Feature"},
                    "geometry": {"$ref": "#/$defs/geometry"},
                    "properties": {  # QuPath's detection objects
                        "type": "object",
                        "required": ["objectType", "classification"],
                        "properties": {
                            "objectType": {"const": "detection"},
                            "classification": {
                                "type": "object",
                                "required": ["name", "color"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "color": {
                                        "type": "array",
                                        "minItems": 3,
                                        "maxItems": 3,
                                        "items": {"type": "integer", "minimum": 0, "maximum": 255},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    labels = {
        "s1": place_grains((256, 384), [1, 2, 6], 40, seed=11).labels,
        "s2": place_grains((256, 384), [5, 8], 30, seed=12).labels,
    }
    store = write_store(tmp / "seg.zarr", labels, block=128)
    res = analyze_store(store, tmp, report=False)
    return store, labels, pd.read_parquet(res.grains_path), export_sections(store, res.grains_path, tmp)


def test_qupath_geojson_validates_and_areas_match(exported):
    jsonschema = pytest.importorskip("jsonschema")
    _, labels, grains, written = exported
    colours = {c.code: list(c.color) for c in LUMENSTONE.classes}
    for section, paths in written.items():
        doc = json.loads(Path(paths["qupath_geojson"]).read_text())
        jsonschema.validate(doc, GEOJSON_SCHEMA)
        rows = grains[grains.section == section].set_index("grain_id")
        assert len(doc["features"]) == len(rows) > 10
        for f in doc["features"]:
            row = rows.loc[f["properties"]["grain_id"]]
            assert f["properties"]["classification"] == {"name": row.class_name, "color": colours[row.class_code]}
            geom = shapely.geometry.shape(f["geometry"])
            assert geom.is_valid
            assert abs(geom.area - row.area_px) <= 0.01 * row.area_px
            cy, cx = geom.representative_point().y, geom.representative_point().x
            assert labels[section][int(cy), int(cx)] == row.class_code


def test_label_ome_tiff_pyramid_reads_back(exported):
    store, labels, _, written = exported
    root = zarr.open_group(str(store), mode="r")
    for section, paths in written.items():
        with tifffile.TiffFile(paths["labels_ome_tiff"]) as tif:
            assert tif.is_ome
            levels = tif.series[0].levels
            stored = [np.asarray(root[f"{section}/labels/minerals/{k}"][:]) for k in range(2)]
            assert len(levels) == len(stored) == 2
            for level, want in zip(levels, stored):
                np.testing.assert_array_equal(level.asarray(), want)
            np.testing.assert_array_equal(levels[0].asarray(), labels[section])
            assert 'PhysicalSizeX="0.5"' in tif.ome_metadata


@pytest.mark.ray
def test_exports_as_ray_tasks_equal_the_serial_ones(exported, ray_session, tmp_path):
    """Byte for byte, but for the OME-XML's UUID (new for every file written)."""
    import re

    store, _, _, written = exported
    grains = Path(written["s1"]["qupath_geojson"]).parents[1] / "grains.parquet"
    apart = export_sections(store, grains, tmp_path, executor="ray", sections=["s2"])
    assert set(apart) == {"s2"}
    for kind in ("qupath_geojson", "labels_ome_tiff"):
        a, b = (re.sub(rb'UUID="urn:uuid:[0-9a-f-]+"', b"", Path(w["s2"][kind]).read_bytes()) for w in (apart, written))
        assert a == b, kind
