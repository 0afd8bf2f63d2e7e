"""Fourier-domain forward model of total-field magnetic anomalies.

Grids are 2-D arrays with axis 0 = northing (ascending) and axis 1 = easting, cell sizes in
metres. Depths are positive down, measured from the observation surface. Magnetisation is in
A/m; anomalies are in nT. The layer formula is Blakely (1995), eq. 11.37: for a layer of
vertically uniform magnetisation ``M(n, e)`` between depths ``z1 < z2``

    F[dT] = 2 pi C_m Theta_m Theta_f (exp(-|k| z1) - exp(-|k| z2)) F[M],

with ``C_m = mu0 / 4 pi`` and ``Theta`` the direction factors of magnetisation and field.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

CM = 1e-7
TESLA_TO_NT = 1e9


def direction_cosines(inclination: float, declination: float) -> tuple[float, float, float]:
    """Unit vector (north, east, down) of a direction given in degrees."""
    inc, dec = np.deg2rad(inclination), np.deg2rad(declination)
    return float(np.cos(inc) * np.cos(dec)), float(np.cos(inc) * np.sin(dec)), float(np.sin(inc))


def wavenumbers(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Angular wavenumbers (rad/m) ``k_north, k_east, |k|`` of an FFT grid, broadcastable to ``shape``."""
    kn = 2 * np.pi * sfft.fftfreq(shape[0], spacing[0])[:, None]
    ke = 2 * np.pi * sfft.fftfreq(shape[1], spacing[1])[None, :]
    return kn, ke, np.hypot(kn, ke)


def theta(kn: np.ndarray, ke: np.ndarray, k: np.ndarray, inclination: float, declination: float) -> np.ndarray:
    """Direction factor ``Theta = d_z + i (d_n k_n + d_e k_e) / |k|`` (``d_z`` at ``k = 0``)."""
    n, e, d = direction_cosines(inclination, declination)
    with np.errstate(invalid="ignore", divide="ignore"):
        horiz = np.where(k > 0, (n * kn + e * ke) / np.where(k > 0, k, 1.0), 0.0)
    return d + 1j * horiz


def as_spacing(spacing: tuple[float, float] | float) -> tuple[float, float]:
    """``(northing, easting)`` cell spacing from one number or a pair."""
    if isinstance(spacing, (tuple, list, np.ndarray)):
        return float(spacing[0]), float(spacing[1])
    return float(spacing), float(spacing)


def padded_shape(shape: tuple[int, int], pad: float) -> tuple[int, int]:
    return sfft.next_fast_len(int(np.ceil(shape[0] * (1 + 2 * pad)))), sfft.next_fast_len(
        int(np.ceil(shape[1] * (1 + 2 * pad)))
    )


class FourierForward:
    """Accumulates layers of magnetisation and returns their total-field anomaly on the grid.

    Args:
        shape: grid shape (northing, easting).
        spacing: cell sizes (northing, easting) in metres.
        field_inclination: inclination of the geomagnetic field in degrees (negative in the south).
        field_declination: declination in degrees east of north.
        pad: zero padding on each side as a fraction of the grid size (limits periodic wrap-around).
    """

    def __init__(
        self,
        shape: tuple[int, int],
        spacing: tuple[float, float] | float,
        field_inclination: float,
        field_declination: float,
        pad: float = 0.5,
    ):
        self.shape = (int(shape[0]), int(shape[1]))
        self.spacing = as_spacing(spacing)
        self.field = (float(field_inclination), float(field_declination))
        self.fft_shape = padded_shape(self.shape, pad)
        self.kn, self.ke, self.k = wavenumbers(self.fft_shape, self.spacing)
        self.theta_f = theta(self.kn, self.ke, self.k, *self.field)
        self._spectrum = np.zeros((self.fft_shape[0], self.fft_shape[1] // 2 + 1), dtype=np.complex128)
        half = slice(0, self.fft_shape[1] // 2 + 1)
        self._kn, self._ke, self._k, self._theta_f = (
            np.broadcast_to(self.kn, self.fft_shape)[:, half],
            np.broadcast_to(self.ke, self.fft_shape)[:, half],
            self.k[:, half],
            self.theta_f[:, half],
        )

    def add(
        self,
        magnetisation: np.ndarray,
        top: float,
        bottom: float,
        inclination: float | None = None,
        declination: float | None = None,
    ) -> None:
        """Add a layer of magnetisation (A/m) between depths ``top < bottom`` (m).

        The magnetisation direction defaults to the field direction (induced magnetisation).
        """
        if magnetisation.shape != self.shape:
            raise ValueError(f"magnetisation shape {magnetisation.shape} != grid shape {self.shape}")
        if not 0 <= top < bottom:
            raise ValueError(f"need 0 <= top < bottom, got top={top}, bottom={bottom}")
        inc = self.field[0] if inclination is None else inclination
        dec = self.field[1] if declination is None else declination
        theta_m = theta(self._kn, self._ke, self._k, inc, dec)
        spec = sfft.rfft2(magnetisation, s=self.fft_shape, workers=-1)
        self._spectrum += spec * theta_m * (np.exp(-self._k * top) - np.exp(-self._k * bottom))

    def anomaly(self) -> np.ndarray:
        """Total-field anomaly (nT) of all layers added so far."""
        scale = 2 * np.pi * CM * TESLA_TO_NT
        out = sfft.irfft2(self._spectrum * self._theta_f * scale, s=self.fft_shape, workers=-1)
        return out[: self.shape[0], : self.shape[1]]


def magnetic_anomaly(
    magnetisation: np.ndarray,
    spacing: tuple[float, float] | float,
    top: float,
    bottom: float,
    field_inclination: float,
    field_declination: float,
    magnetisation_inclination: float | None = None,
    magnetisation_declination: float | None = None,
    pad: float = 0.5,
) -> np.ndarray:
    """Total-field anomaly (nT) of one magnetised layer; see :class:`FourierForward`."""
    fwd = FourierForward(magnetisation.shape, spacing, field_inclination, field_declination, pad)
    fwd.add(magnetisation, top, bottom, magnetisation_inclination, magnetisation_declination)
    return fwd.anomaly()
