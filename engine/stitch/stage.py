"""Stage positions in micrometres: which frames to pair, and the pixel size they give.

A section's ``positions.csv`` may give its frames' stage positions in micrometres
(``file,x_um,y_um``; :mod:`engine.stitch.frames`). How many micrometres a pixel is, and how the
stage's axes lie on the camera's, is not known before the frames are matched, so each frame is first
matched on coarse features with its :data:`NEIGHBOURS` nearest stage positions
(:func:`stage_neighbours`; in a grid, the eight frames around it). :func:`stage_pixels` fits the
similarity taking the stage's moves between the matched frames to theirs in pixels and turns the
stage positions into nominal positions in pixels: from there the section is stitched as one with
nominal positions (every pair that overlaps there is registered).

Once the section is aligned, :func:`fit_stage` fits a similarity (scale, rotation, one axis mirrored
or not) from the frames' centres in panorama pixels to their stage positions by least squares
(Umeyama's closed form): its scale is the pixel size in µm/px, its residual says how well the
stage and the alignment agree. :func:`section_pixel_size` decides which pixel size a section
gets: a calibration's or an option's first, else the stage fit's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

NEIGHBOURS = 8
AGREEMENT = 0.02

PixelSizeSource = Literal["calibration", "option", "stage"]


@dataclass(frozen=True)
class StageFit:
    """A similarity from panorama pixels to stage micrometres: ``pixel_size_um`` (µm/px, 6 significant
    digits), the rotation of the stage's axes against the panorama's (degrees), whether one axis is
    mirrored, the RMS and largest residual (µm) over ``frames`` placed frames."""

    pixel_size_um: float
    rotation_deg: float
    mirrored: bool
    rms_um: float
    max_um: float
    frames: int

    def to_dict(self) -> dict:
        return asdict(self)


def stage_neighbours(stage_um: np.ndarray, k: int = NEIGHBOURS) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, sorted, where either frame is among the other's ``k`` nearest stage
    positions ``(n, 2)``."""
    n = len(stage_um)
    if n < 2:
        return []
    _, idx = cKDTree(stage_um).query(stage_um, k=min(k, n - 1) + 1)
    return sorted({(min(i, int(j)), max(i, int(j))) for i, row in enumerate(idx) for j in row if j != i})


def _scaled_orthogonal(p: np.ndarray, q: np.ndarray) -> tuple[float, np.ndarray]:
    """Scale ``c`` and orthogonal ``R`` (a rotation, or one with an axis mirrored) minimising
    ``|q - c p Rᵀ|²`` over vectors ``p``, ``q`` ``(n, 2)`` (Umeyama's closed form)."""
    U, S, Vt = np.linalg.svd(q.T @ p)
    return float(S.sum()) / float((p**2).sum()), U @ Vt


def stage_pixels(
    stage_um: np.ndarray, matches: list[tuple[int, int, np.ndarray]], hw: tuple[int, int]
) -> np.ndarray | None:
    """Nominal positions in pixels ``(n, 2)`` of frames ``hw`` at ``stage_um``, given coarse ``matches``
    ``(i, j, M)`` (``M``: frame ``j`` → frame ``i``): the stage positions through the similarity that takes
    the stage's moves between matched frames to theirs, fitted again without the matches more than
    three times the median residual (+1 px) from it; ``None`` without a match that moves."""
    h, w = hw
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    moves_um = np.array([stage_um[j] - stage_um[i] for i, j, _ in matches]).reshape(-1, 2)
    moves_px = np.array([M[:2, :2] @ centre + M[:2, 2] - centre for _, _, M in matches]).reshape(-1, 2)
    keep = np.any(moves_um != 0, axis=1)
    if not keep.any():
        return None
    scale, R = _scaled_orthogonal(moves_um[keep], moves_px[keep])
    residual = np.linalg.norm(moves_px - scale * moves_um @ R.T, axis=1)
    keep &= residual <= 3 * np.median(residual[keep]) + 1.0
    scale, R = _scaled_orthogonal(moves_um[keep], moves_px[keep])
    return scale * stage_um @ R.T


def fit_stage(stage_um: np.ndarray, pixel_xy: np.ndarray) -> StageFit | None:
    """The least-squares similarity taking ``pixel_xy`` (frame centres in panorama pixels, ``(n, 2)``)
    to ``stage_um`` (the same frames' stage positions); ``None`` for fewer than two distinct positions."""
    if len(stage_um) < 2:
        return None
    p = pixel_xy - pixel_xy.mean(axis=0)
    q = stage_um - stage_um.mean(axis=0)
    if not np.any(p) or not np.any(q):
        return None
    scale, R = _scaled_orthogonal(p, q)
    residual = np.linalg.norm(q - scale * p @ R.T, axis=1)
    return StageFit(
        pixel_size_um=float(f"{scale:.6g}"),
        rotation_deg=round(float(np.degrees(np.arctan2(R[1, 0], R[0, 0]))), 4),
        mirrored=bool(np.linalg.det(R) < 0),
        rms_um=round(float(np.sqrt(np.mean(residual**2))), 4),
        max_um=round(float(residual.max()), 4),
        frames=len(stage_um),
    )


def section_pixel_size(
    given: float | None, source: PixelSizeSource, fit: StageFit | None, section: str
) -> tuple[float | None, PixelSizeSource | None, str | None]:
    """A section's pixel size (µm), where it comes from, and a warning when the ``given`` one (from
    ``source``: the calibration or an option) and the stage ``fit``'s differ by more than :data:`AGREEMENT`."""
    if given is None:
        return (None, None, None) if fit is None else (fit.pixel_size_um, "stage", None)
    if fit is None or abs(fit.pixel_size_um / given - 1) <= AGREEMENT:
        return given, source, None
    warning = (
        f"section {section}: its stage positions give {fit.pixel_size_um:g} µm/px, "
        f"{100 * (fit.pixel_size_um / given - 1):+.1f} % from the {source}'s {given:g} µm/px (used)"
    )
    return given, source, warning
