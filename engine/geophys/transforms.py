"""Potential-field transforms of gridded anomalies: derivatives, reduction to the pole,
upward continuation and total gradient amplitude.

Grids follow :mod:`engine.geophys.forward` (axis 0 = northing ascending, axis 1 = easting).
NaN cells (unsurveyed holes) are filled with their nearest surveyed value before any Fourier
filter, the grid is mirror-padded against edge effects, and the holes are NaN again in the
result.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from engine.geophys.forward import as_spacing, theta, wavenumbers


def fill_nan(grid: np.ndarray) -> np.ndarray:
    """Copy of ``grid`` with every NaN replaced by its nearest finite neighbour."""
    holes = ~np.isfinite(grid)
    if not holes.any():
        return np.asarray(grid, dtype=np.float64)
    if holes.all():
        raise ValueError("grid has no finite values")
    idx = ndimage.distance_transform_edt(holes, return_distances=False, return_indices=True)
    return np.asarray(grid, dtype=np.float64)[tuple(idx)]


def spectral_filter(
    grid: np.ndarray,
    spacing: tuple[float, float] | float,
    response: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    pad: float = 0.25,
) -> np.ndarray:
    """Apply a wavenumber response ``response(k_north, k_east, |k|)`` to a grid."""
    spacing = as_spacing(spacing)
    holes = ~np.isfinite(grid)
    filled = fill_nan(grid)
    mean = filled.mean()
    pn, pe = (int(np.ceil(s * pad)) for s in filled.shape)
    padded = np.pad(filled - mean, ((pn, pn), (pe, pe)), mode="symmetric")
    shape = tuple(sfft.next_fast_len(s) for s in padded.shape)
    padded = np.pad(padded, ((0, shape[0] - padded.shape[0]), (0, shape[1] - padded.shape[1])), mode="symmetric")
    kn, ke, k = wavenumbers(shape, spacing)
    spec = sfft.fft2(padded, workers=-1) * response(kn, ke, k)
    out = sfft.ifft2(spec, workers=-1).real[pn : pn + grid.shape[0], pe : pe + grid.shape[1]]
    zero = np.zeros((1, 1))
    out = out + mean * complex(response(zero, zero, zero).item()).real
    out[holes] = np.nan
    return out


def upward_continue(grid: np.ndarray, spacing: tuple[float, float] | float, height: float) -> np.ndarray:
    """Field continued ``height`` metres upward (``exp(-|k| h)``)."""
    return spectral_filter(grid, spacing, lambda kn, ke, k: np.exp(-k * height))


def vertical_derivative(grid: np.ndarray, spacing: tuple[float, float] | float, order: int = 1) -> np.ndarray:
    """``order``-th vertical derivative (``|k|^n``), per metre^n, positive upward decay convention."""
    return spectral_filter(grid, spacing, lambda kn, ke, k: k**order)


def horizontal_derivatives(grid: np.ndarray, spacing: tuple[float, float] | float) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference derivatives ``(d/dnorth, d/deast)`` per metre."""
    spacing = as_spacing(spacing)
    dn, de = np.gradient(fill_nan(grid), *spacing)
    holes = ~np.isfinite(grid)
    dn[holes] = np.nan
    de[holes] = np.nan
    return dn, de


def total_gradient_amplitude(grid: np.ndarray, spacing: tuple[float, float] | float) -> np.ndarray:
    """Total gradient amplitude (3-D analytic signal) ``sqrt(dT/dn^2 + dT/de^2 + dT/dz^2)``."""
    dn, de = horizontal_derivatives(grid, spacing)
    dz = vertical_derivative(grid, spacing)
    return np.sqrt(dn**2 + de**2 + dz**2)


def rtp_tga(
    grid: np.ndarray,
    spacing: tuple[float, float] | float,
    field_inclination: float,
    field_declination: float,
    height: float = 0.0,
) -> np.ndarray:
    """Total gradient amplitude of the field reduced to the pole and continued ``height`` metres
    upward (none when 0): the classical lineament route's filter chain."""
    rtp = reduce_to_pole(grid, spacing, field_inclination, field_declination)
    if height > 0:
        rtp = upward_continue(rtp, spacing, height)
    return total_gradient_amplitude(rtp, spacing)


def reduce_to_pole(
    grid: np.ndarray,
    spacing: tuple[float, float] | float,
    field_inclination: float,
    field_declination: float,
    magnetisation_inclination: float | None = None,
    magnetisation_declination: float | None = None,
    min_inclination: float = 15.0,
) -> np.ndarray:
    """Reduction to the pole: divide by ``Theta_m Theta_f`` (Blakely 1995, eq. 12.31).

    At low latitudes ``Theta`` approaches zero along the declination; the inclination used in
    the operator is clamped to at least ``min_inclination`` degrees in magnitude.
    """

    def clamp(inc: float) -> float:
        return float(np.sign(inc) or 1.0) * max(abs(inc), min_inclination)

    finc = clamp(field_inclination)
    minc = finc if magnetisation_inclination is None else clamp(magnetisation_inclination)
    mdec = field_declination if magnetisation_declination is None else magnetisation_declination

    def response(kn: np.ndarray, ke: np.ndarray, k: np.ndarray) -> np.ndarray:
        tf = theta(kn, ke, k, finc, field_declination)
        tm = theta(kn, ke, k, minc, mdec)
        return 1.0 / (tf * tm)

    return spectral_filter(grid, spacing, response)
