"""Exports for tools that do not read Lode's stores: QuPath (GeoJSON detections), OME-TIFF
label pyramids, and QGIS layers of survey outputs (GeoPackage / GeoJSON with CRS, cloud-optimised
GeoTIFF)."""
