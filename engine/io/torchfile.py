"""Reading ``torch.save`` files as untrusted input: ``weights_only=True`` only, and a file that
does not load is refused naming it with a plain reason (torch's own text advises unsafe loading)."""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.errors import LodeInputError


def load_torch(file: str | Path | io.BytesIO, source: str | Path, what: str, safe_globals: Iterable[Any] = (),
               **kwargs: Any) -> Any:
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


def entries(blob: Any, source: str | Path, what: str, keys: Iterable[str]) -> dict:
    """``blob`` as a dict holding every one of ``keys``, else ``LodeInputError`` naming the first missing."""
    if not isinstance(blob, dict):
        raise LodeInputError(source, f"not a {what} (holds a {type(blob).__name__}, not a dict)")
    missing = [k for k in keys if k not in blob]
    if missing:
        raise LodeInputError(source, f"not a {what} (no {missing[0]!r} entry)")
    return blob


def verify_in_child(path: str | Path, module: str, tag: str = "") -> None:
    """Check a local checkpoint whole in a short child process, ``python -m <module> PATH`` (see
    :func:`verify_main`), so that this process stays free of torch. A file already checked (same
    path, size, modification time and ``tag``) is not checked again.

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
    proc = subprocess.run([sys.executable, "-m", module, str(p)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
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
