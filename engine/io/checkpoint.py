"""The one checkpoint format of every network Lode trains (segmentation, the lineament U-Net, the
prospectivity MAE and conv-AE).

A checkpoint is one ``torch.save`` zip archive holding ``{"state_dict", "tensors", "card",
**extra}``: the weights, their names and shapes (``torchfile.tensor_list``), the model card (a
pydantic model of the task, stored as plain data) and extra tensors or plain data (a traced
program, a latent Gaussian). The card is stored once more as the JSON entry ``lode_card.json`` of
the same archive, so drivers and read/write tasks learn it without importing torch (a CUDA build
costs a process about 0.5 GiB). Everything loads with ``weights_only=True``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from engine.errors import LodeInputError

CARD_ENTRY = "lode_card.json"
C = TypeVar("C", bound=BaseModel)
Upgrade = Callable[[dict], dict]
"""Turns the pickled contents of a task's earlier checkpoint format into the shared layout."""


def write_checkpoint(
    path: str | Path, state: dict[str, Any], card: BaseModel, extra: dict[str, Any] | None = None
) -> None:
    """Write the archive whole (local path or URI; no reader sees part of it).

    Args:
        state: the state dict (tensors, moved to the CPU here).
        card: the model card; stored as plain data and as the JSON entry.
        extra: further entries (tensors, bytes or plain data), e.g. ``{"program": bytes}``.
    """
    import torch

    from engine.io.atomic import atomic_write_bytes
    from engine.io.torchfile import tensor_list

    state = {k: v.detach().cpu() for k, v in state.items()}
    doc = card.model_dump(mode="json")
    buf = io.BytesIO()
    torch.save({**(extra or {}), "state_dict": state, "tensors": tensor_list(state), "card": doc}, buf)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr(f"{z.namelist()[0].split('/')[0]}/{CARD_ENTRY}", json.dumps(doc))
    atomic_write_bytes(path, buf.getvalue())


def validate(raw: object, card_type: type[C], path: str | Path, what: str) -> C:
    """``raw`` as a ``card_type``; errors name the checkpoint and each wrong field."""
    if not isinstance(raw, dict):
        raise LodeInputError(path, f"not a {what} (no 'card' entry)")
    try:
        return card_type.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in exc.errors())
        raise LodeInputError(path, f"not a {what} (model card: {problems})") from exc


def _located(path: str | Path) -> str | Path:
    from engine.io import fs

    located: str | Path = str(path) if fs.is_uri(path) else Path(fs.local(path))
    if not fs.exists(located) or fs.isdir(located):
        raise LodeInputError(path, "checkpoint not found")
    return located


def raw_card(path: str | Path, what: str, upgrade: Upgrade | None = None) -> object:
    """The card of a checkpoint as plain data, without torch: its JSON entry, or for archives
    written before the entry existed the pickled ``card`` (after ``upgrade``) read with tensors as
    shapes. From an object store only the zip's directory and the entry are fetched."""
    from engine.io import fs

    located = _located(path)
    filesystem, inner = fs.filesystem(located)
    try:
        with filesystem.open(inner, "rb") as f, zipfile.ZipFile(f) as z:
            entry = next((n for n in z.namelist() if n.rsplit("/", 1)[-1] == CARD_ENTRY), None)
            if entry is not None:
                return json.loads(z.read(entry))
    except zipfile.BadZipFile as exc:
        raise LodeInputError(path, f"not a {what} (unreadable torch file: not a torch zip archive)") from exc
    except (OSError, ValueError) as exc:
        raise LodeInputError(path, f"not a {what}: {exc}") from exc
    plain = _read_plain(located, what)
    return (upgrade(plain) if upgrade else plain).get("card")


def _read_plain(path: str | Path, what: str) -> dict:
    """The archive's pickled contents with every tensor as a ``TensorInfo`` (no torch)."""
    from engine.io import fs
    from engine.io.torchfile import entries, read_without_torch

    file = io.BytesIO(fs.read_bytes(str(path))) if fs.is_uri(path) else fs.local(path)
    return entries(read_without_torch(file, path, what), path, what, ("state_dict",))


def read_card(path: str | Path, card_type: type[C], what: str, upgrade: Upgrade | None = None) -> C:
    """The validated card of a checkpoint, without torch; errors name the file."""
    return validate(raw_card(path, what, upgrade), card_type, path, what)


def read_checkpoint(
    path: str | Path,
    card_type: type[C],
    what: str,
    safe_globals: tuple[Any, ...] = (),
    upgrade: Upgrade | None = None,
    **load: Any,
) -> tuple[dict, C]:
    """The whole archive (``weights_only=True``; torch is imported; ``safe_globals`` allowed
    besides tensors and plain data) and its validated card."""
    from engine.io import fs
    from engine.io.torchfile import entries, load_torch

    located = _located(path)
    file = io.BytesIO(fs.read_bytes(str(located))) if fs.is_uri(located) else fs.local(located)
    blob = entries(load_torch(file, path, what, safe_globals, **load), path, what, ("state_dict",))
    blob = upgrade(blob) if upgrade else blob
    return blob, validate(blob.get("card"), card_type, path, what)


def load_weights(model: Any, state: dict, path: str | Path, what: str, assign: bool = False) -> Any:
    """``model.load_state_dict(state)``; a state that does not fit is bad input naming the file."""
    from engine.io.torchfile import check_tensors

    check_tensors(state, {k: list(v.shape) for k, v in model.state_dict().items()}, path)
    try:
        model.load_state_dict(state, assign=assign)
    except RuntimeError as exc:
        raise LodeInputError(path, f"not a {what}: {' '.join(str(exc).split())}") from exc
    return model
