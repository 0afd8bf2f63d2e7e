"""Capture calibration: lens distortion and flat field (``lens``, ``flat``)."""
