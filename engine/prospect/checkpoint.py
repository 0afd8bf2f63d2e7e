"""Prospect model checkpoints, in Lode's one format (:mod:`engine.io.checkpoint`): the weights,
a :class:`ProspectCard` (model kind, constructor config, stack channels, training summary) and,
for the MAE, its latent Gaussian as the extra entry ``latent`` (float32 tensors ``mean`` (D,) and
``precision`` (D, D)). :func:`read_card` reads the card without torch (what a driver needs);
loading the model imports torch. Checkpoints of the earlier prospect format (the same fields at
the top level, the latent Gaussian as numpy arrays) still load."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from pydantic import BaseModel, Field, model_validator

from engine.errors import LodeInputError

if TYPE_CHECKING:
    import torch

    from engine.nets.mae import ConvAutoencoder, ProspectMAE

CHECKPOINT = "prospect checkpoint"
Latent = dict[str, np.ndarray]


class ProspectCard(BaseModel):
    """Everything needed to rebuild a prospect model and map a stack with it."""

    task: str = "prospectivity-anomaly"
    kind: Literal["mae", "cae"]
    config: dict[str, Any] = Field(description="the network's constructor arguments")
    channels: list[str] = Field(description="the stack's channels, in input order")
    train: dict[str, Any] = Field(default_factory=dict, description="what training did")

    @model_validator(mode="after")
    def _channels_match(self) -> ProspectCard:
        if int(self.config.get("channels", -1)) != len(self.channels):
            raise ValueError(f"config.channels={self.config.get('channels')} for {len(self.channels)} channel names")
        return self


def _earlier(blob: dict) -> dict:
    """A checkpoint of the earlier format (``kind``, ``config``, ``channels``, ``train`` at the top
    level) as the shared one: the card under ``card``."""
    if "card" in blob or "kind" not in blob:
        return blob
    card = {k: blob[k] for k in ("kind", "config", "channels", "train") if k in blob}
    return {**blob, "card": card}


def read_card(path: str | Path) -> ProspectCard:
    """The card of a prospect checkpoint, without torch; errors name the file."""
    from engine.io.checkpoint import read_card as read

    return read(path, ProspectCard, CHECKPOINT, _earlier)


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    kind: str,
    channels: list[str],
    latent: Latent | None = None,
    train: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint whole; ``latent`` (``{"mean", "precision"}`` arrays) for the MAE."""
    import torch

    from engine.io.checkpoint import write_checkpoint

    card = ProspectCard(kind=kind, config=model.config, channels=channels, train=train or {})  # type: ignore[arg-type]
    extra = {"latent": {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in latent.items()}} if latent else None
    write_checkpoint(path, model.state_dict(), card, extra)
    return Path(path)


def load_checkpoint(path: str | Path) -> tuple[ProspectMAE | ConvAutoencoder, ProspectCard, Latent]:
    """``(model in eval mode, card, latent Gaussian)`` (the Gaussian is empty for the conv-AE);
    errors name the file."""
    from engine.io.checkpoint import load_weights, read_checkpoint
    from engine.nets import build

    path = Path(path)
    if not path.exists():
        raise LodeInputError(path, "model checkpoint not found")
    earlier_numpy = (
        np._core.multiarray._reconstruct,  # type: ignore[attr-defined]  # numpy's stubs omit _core
        np.ndarray,
        np.dtype,
        np.dtypes.Float16DType,
        np.dtypes.Float32DType,
        np.dtypes.Float64DType,
    )
    blob, card = read_checkpoint(path, ProspectCard, CHECKPOINT, earlier_numpy, _earlier)
    try:
        model = cast("ProspectMAE | ConvAutoencoder", build(card.kind, **card.config))
    except (TypeError, ValueError) as exc:
        raise LodeInputError(path, f"not a {CHECKPOINT}: {' '.join(str(exc).split())}") from exc
    load_weights(model, blob["state_dict"], path, CHECKPOINT)
    latent = blob.get("latent")
    if card.kind == "mae" and not (isinstance(latent, dict) and {"mean", "precision"} <= latent.keys()):
        raise LodeInputError(path, f"not a {CHECKPOINT} (an MAE without its latent Gaussian)")
    arrays = {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float32) for k, v in (latent or {}).items()}
    return model.eval(), card, arrays
