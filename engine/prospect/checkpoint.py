"""Prospect model checkpoints: a ``torch.save`` dict with the model kind, config and weights, the
stack channel names, and for the MAE the latent Gaussian. ``checkpoint_meta`` reads the plain
fields without torch (what a driver needs); loading the model imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import LodeInputError
from engine.io.atomic import atomic_path
from engine.io.torchfile import entries, load_torch, read_without_torch, tensor_list

if TYPE_CHECKING:
    import torch

    from engine.prospect.model import ConvAutoencoder, ProspectMAE

CHECKPOINT = "prospect checkpoint"


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """``kind``, ``config`` and ``channels`` of a prospect checkpoint, read without torch."""
    ck = entries(read_without_torch(path, path, CHECKPOINT), path, CHECKPOINT, ("kind", "config", "channels"))
    return {"kind": str(ck["kind"]), "config": dict(ck["config"]), "channels": list(ck["channels"])}


def save_checkpoint(
    path: str | Path, model: torch.nn.Module, kind: str, channels: list[str], extra: dict | None = None
) -> Path:
    import torch

    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(
            {
                "kind": kind,
                "config": model.config,
                "state_dict": state,
                "tensors": tensor_list(state),
                "channels": channels,
                **(extra or {}),
            },
            tmp,
        )
    return path


def load_checkpoint(path: str | Path) -> tuple[ProspectMAE | ConvAutoencoder, dict]:
    from engine.prospect.model import build

    path = Path(path)
    if not path.exists():
        raise LodeInputError(path, "model checkpoint not found")
    numpy_arrays = (
        np._core.multiarray._reconstruct,  # type: ignore[attr-defined]  # numpy's stubs omit _core
        np.ndarray,
        np.dtype,  # the MAE's latent Gaussian
        np.dtypes.Float16DType,
        np.dtypes.Float32DType,
        np.dtypes.Float64DType,
    )
    ck = entries(load_torch(path, path, CHECKPOINT, numpy_arrays), path, CHECKPOINT, ("kind", "config", "state_dict"))
    try:
        model = build(ck["kind"], ck["config"])
        model.load_state_dict(ck["state_dict"])
    except Exception as exc:  # noqa: BLE001 - a checkpoint that does not build is bad input
        raise LodeInputError(path, f"not a {CHECKPOINT}: {' '.join(str(exc).split())}") from exc
    return model.eval(), ck
