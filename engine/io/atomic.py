"""Writing outputs so that nothing is ever half-written: stage beside the target, then rename
(on an object store, one PUT per object; see :mod:`engine.io.fs`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engine.io.fs import filesystem, is_uri, local


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a whole file at a local path or URI; no reader ever sees part of it."""
    if is_uri(path):
        fs, inner = filesystem(path)
        fs.pipe_file(inner, data)
        return
    p = Path(local(path))
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, p)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextmanager
def staged_directory(out: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``out``, on any error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
