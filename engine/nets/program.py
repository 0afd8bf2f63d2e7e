"""A network traced at its window size (TorchScript), stored in its checkpoint as ``program``.

CPU inference actors run the program with torch alone: no segmentation-models-pytorch, timm or
torchvision import (seconds per fresh process, and ≈ 0.2 GB of resident memory: torchvision
pulls in torch's compiler stack). The program runs the very operators of the eager network, so
its output is the same.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from engine.errors import LodeInputError


def trace(model: nn.Module, in_channels: int, window: int) -> bytes:
    """``model`` traced on the CPU for ``(N, in_channels, window, window)`` input, serialised."""
    cpu = copy.deepcopy(getattr(model, "module", model)).cpu().eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # smp's input-size checks become constants at the traced size; TorchScript is deprecated
        # in favour of torch.export/compile, whose loaders import the compiler stack (seconds).
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(cpu, torch.zeros(1, in_channels, window, window)), buf)
    return buf.getvalue()


def load_program(data: bytes, path: str | Path) -> torch.jit.ScriptModule:
    """The stored program on the CPU, in eval mode; an unreadable one is bad input naming ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation of TorchScript: see trace
        try:
            return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        except Exception as exc:
            raise LodeInputError(path, f"unreadable inference program: {exc}") from exc
