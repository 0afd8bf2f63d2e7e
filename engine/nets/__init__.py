"""The one factory for every network Lode trains: :func:`build` makes the untrained network a
checkpoint card names, by kind and constructor arguments.

- an smp architecture (:data:`engine.nets.smp.ARCHITECTURES`): mineral segmentation and the
  lineament U-Net; arguments ``encoder``, ``in_channels``, ``classes``;
- ``mae``: the prospectivity masked autoencoder (:class:`engine.nets.mae.ProspectMAE`);
- ``cae``: its convolutional-autoencoder baseline (:class:`engine.nets.mae.ConvAutoencoder`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from engine.nets.smp import ARCHITECTURES, create_smp

KINDS = (*ARCHITECTURES, "mae", "cae")


def build(kind: str, **config: Any) -> nn.Module:
    """The untrained network of ``kind`` built with ``config``; raises ``ValueError`` for an unknown
    kind and ``TypeError`` for arguments the kind does not take."""
    if kind == "mae":
        from engine.nets.mae import ProspectMAE

        return ProspectMAE(**config)
    if kind == "cae":
        from engine.nets.mae import ConvAutoencoder

        return ConvAutoencoder(**config)
    if kind.lower() in ARCHITECTURES:
        return create_smp(kind, **config)
    raise ValueError(f"unknown network kind {kind!r}; choose from {KINDS}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
