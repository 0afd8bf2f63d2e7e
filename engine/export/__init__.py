"""Exports for tools that do not read Lode's stores: QuPath (GeoJSON detections), OME-TIFF
label pyramids, and QGIS layers (GeoJSON with CRS) of survey outputs."""
