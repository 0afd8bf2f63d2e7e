"""Blend weights for overlapping windows."""

from __future__ import annotations

import torch


def gaussian_weights(window: int, sigma_scale: float = 0.125, device: torch.device | str = "cpu") -> torch.Tensor:
    """Separable Gaussian importance map ``(window, window)`` (MONAI's ``gaussian`` mode).

    sigma = ``sigma_scale * window``; values are clamped below at the map's minimum or
    1e-3, whichever is larger, so that no pixel gets zero weight.
    """
    sigma = window * sigma_scale
    x = torch.arange(-(window - 1) / 2.0, (window - 1) / 2.0 + 1, dtype=torch.float, device=device)
    g = torch.exp(x**2 / (-2 * sigma**2))
    w = g.unsqueeze(-1) * g[None]
    return torch.clamp_(w, min=max(torch.min(w).item(), 1e-3))
