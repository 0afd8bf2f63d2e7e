"""Panorama stitching of polished sections.

Modules, in pipeline order:

- ``frames``: a section's tiles and positions; per-frame flat-field and lens correction.
- ``register``: pairwise SIFT + RANSAC similarity on the expected overlap; ECC on the overlap where keypoints fail.
- ``align``: robust least-squares solve of every frame's similarity over all edges; edge rejection.
- ``confidence``: each frame's predicted error (edge residuals, leave-one-edge-out, propagation); one-edge frames.
- ``exposure``: per-frame, per-channel gains by least squares over overlaps.
- ``seams``: graph-cut seams (OpenCV) as a low-resolution ownership map.
- ``refine``: those seams cut again at full resolution in a band around them, pair by pair.
- ``render``: one output shard from the frames that touch it (multiband or feathered seams).
- ``section``: the Ray orchestration of one section and its stitch report.
- ``collection``: sections and calibration of a collection folder.
- ``evaluate``: scores against synthetic truth (RMS, ΔE2000, seam gradients).
"""
