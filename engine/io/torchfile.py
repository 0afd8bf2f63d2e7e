"""Reading ``torch.save`` files as untrusted input: ``weights_only=True`` only, and a file that
does not load is refused naming it with a plain reason (torch's own text advises unsafe loading)."""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from engine.errors import LodeInputError


def load_torch(
    file: str | Path | io.BytesIO, source: str | Path, what: str, safe_globals: Iterable[Any] = (), **kwargs: Any
) -> Any:
    """``torch.load(file, map_location="cpu", weights_only=True, **kwargs)``, with ``safe_globals``
    allowed besides tensors and plain data. Raises ``LodeInputError(source, "not a <what> (...)")``."""
    import torch

    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(file, map_location="cpu", weights_only=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises, the file is bad input
        if isinstance(file, io.BytesIO):
            file.seek(0)
        if not zipfile.is_zipfile(file):
            detail = "not a torch zip archive"
        elif isinstance(exc, pickle.UnpicklingError):
            detail = "holds objects other than tensors and plain data"
        else:
            detail = "damaged archive"
        raise LodeInputError(source, f"not a {what} (unreadable torch file: {detail})") from exc


@dataclass(frozen=True)
class TensorInfo:
    """A tensor of a ``torch.save`` archive as read without torch: its shape and storage type."""

    shape: tuple[int, ...]
    storage: str


_PLAIN = {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
}
_TENSORS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter")}


class _TorchFree(pickle.Unpickler):
    """Unpickles a ``torch.save`` archive's ``data.pkl`` without importing torch (a CUDA build of torch
    costs a process ~0.6 GiB and seconds): tensors come back as :class:`TensorInfo`. Like
    ``weights_only=True`` loading, it builds no object outside plain data, numpy arrays and tensors."""

    def __init__(self, file: IO[bytes], records: set[str]):
        super().__init__(file)
        self.records = records

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TENSORS:
            return _tensor_info
        if module == "torch" and name.endswith("Storage"):
            return name
        if (module, name) in _PLAIN or module == "numpy.dtypes":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> str:
        kind, storage, key = pid[:3]
        if kind != "storage" or str(key) not in self.records:
            raise ValueError(f"tensor storage {key!r} is not in the archive")
        return str(storage)


def _tensor_info(storage: Any, offset: int = 0, size: Any = (), *args: Any) -> TensorInfo | Any:
    if isinstance(storage, TensorInfo):
        return storage
    return TensorInfo(tuple(int(n) for n in size), str(storage))


def read_without_torch(file: str | Path | IO[bytes], source: str | Path, what: str) -> Any:
    """The contents of a ``torch.save`` archive with every tensor as a :class:`TensorInfo`, without
    importing torch. Raises ``LodeInputError(source, "not a <what> (...)")`` like :func:`load_torch`,
    also when a tensor's storage record is missing from the archive."""
    try:
        with zipfile.ZipFile(file) as z:
            names = z.namelist()
            pkl = next(n for n in names if n.endswith("/data.pkl"))
            prefix = pkl[: -len("data.pkl")] + "data/"
            records = {n[len(prefix) :] for n in names if n.startswith(prefix)}
            return _TorchFree(io.BytesIO(z.read(pkl)), records).load()
    except Exception as exc:  # noqa: BLE001 - whatever fails, the file is bad input
        detail = (
            "not a torch zip archive"
            if isinstance(exc, (zipfile.BadZipFile, StopIteration))
            else "holds objects other than tensors and plain data"
            if isinstance(exc, pickle.UnpicklingError)
            else "damaged archive"
        )
        raise LodeInputError(source, f"not a {what} (unreadable torch file: {detail})") from exc


def tensor_list(state: dict[str, Any]) -> dict[str, list[int]]:
    """``{name: shape}`` of a state dict: stored beside it in a checkpoint (key ``"tensors"``) so that
    a missing or reshaped tensor is found without torch (:func:`verify_in_child`)."""
    return {k: list(v.shape) for k, v in state.items()}


def check_tensors(state: Any, expected: dict[str, list[int]], source: str | Path) -> None:
    """Every tensor of ``expected`` (name → shape) present in ``state`` with that shape, and no other;
    ``state`` maps names to tensors or :class:`TensorInfo`. Raises ``LodeInputError`` naming ``source``
    with the counts of missing, unexpected and wrongly shaped tensors and the first of each."""
    have = {k: tuple(v.shape) for k, v in dict(state).items()}
    want = {k: tuple(v) for k, v in expected.items()}
    missing = sorted(want.keys() - have.keys())
    extra = sorted(have.keys() - want.keys())
    wrong = sorted(k for k in want.keys() & have.keys() if have[k] != want[k])
    parts = [
        f"{len(ks)} {what} (first: {ks[0]})"
        for what, ks in (
            ("tensor(s) missing", missing),
            ("unexpected tensor(s)", extra),
            ("tensor(s) of the wrong shape", wrong),
        )
        if ks
    ]
    if parts:
        raise LodeInputError(source, "weights do not fit the model card: " + "; ".join(parts))


def entries(blob: Any, source: str | Path, what: str, keys: Iterable[str]) -> dict:
    """``blob`` as a dict holding every one of ``keys``, else ``LodeInputError`` naming the first missing."""
    if not isinstance(blob, dict):
        raise LodeInputError(source, f"not a {what} (holds a {type(blob).__name__}, not a dict)")
    missing = [k for k in keys if k not in blob]
    if missing:
        raise LodeInputError(source, f"not a {what} (no {missing[0]!r} entry)")
    return blob


def verify_in_child(path: str | Path, module: str, tag: str = "", what: str = "checkpoint") -> None:
    """Check a local checkpoint whole, keeping this process free of torch: here, every tensor of its
    ``"tensors"`` list present with that shape (read without torch, in well under a second); then
    in a short child process, ``python -m <module> PATH`` (see :func:`verify_main`; finite weights,
    a dry forward pass). A file already checked (same path, size, modification time and ``tag``) is
    not checked again.

    Raises:
        LodeInputError: naming ``path``, with the child's reason.
    """
    import hashlib
    import os
    import subprocess
    import sys
    import tempfile

    p = Path(path).resolve()
    st = p.stat()
    key = hashlib.sha256(f"{module}:{p}:{st.st_size}:{st.st_mtime_ns}:{tag}".encode()).hexdigest()[:32]
    marker = Path(tempfile.gettempdir()) / "lode-verified-checkpoints" / key
    if marker.exists():
        return
    blob = read_without_torch(p, path, what)
    if isinstance(blob, dict) and isinstance(blob.get("tensors"), dict) and isinstance(blob.get("state_dict"), dict):
        check_tensors(blob["state_dict"], blob["tensors"], path)
    proc = subprocess.run(
        [sys.executable, "-m", module, str(p)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    last = (proc.stderr.strip().splitlines() or ["?"])[-1]
    if proc.returncode == 2:
        raise LodeInputError(path, last.split(": ", 1)[-1])
    if proc.returncode != 0:
        raise LodeInputError(path, f"checkpoint check failed: {last}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def verify_main(verify: Callable[[str], Any]) -> None:
    """The child side of :func:`verify_in_child`: ``verify(sys.argv[1])``, exit 2 with the reason."""
    import sys

    try:
        verify(sys.argv[1])
    except LodeInputError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
