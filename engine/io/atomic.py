"""Writing outputs so that nothing is ever half-written: stage beside the target, then rename
(on an object store, one PUT per object; see :mod:`engine.io.fs`).

This is the one module that renames files: every other module writes through these helpers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.io.fs import filesystem, is_uri, local


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a whole file at a local path or URI; no reader ever sees part of it."""
    if is_uri(path):
        fs, inner = filesystem(path)
        fs.pipe_file(inner, data)
        return
    with atomic_path(local(path)) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, doc: Any, **dumps: Any) -> None:
    """``json.dumps(doc, **dumps)`` written whole (local path or URI)."""
    atomic_write_text(path, json.dumps(doc, **dumps))


def _sibling(path: Path) -> Path:
    """A unique hidden name beside ``path`` that keeps its suffix (writers that choose the format by
    extension, or append one, such as ``np.save``, ``cv2.imwrite`` and ``savefig``, see the same one)."""
    return path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def _replace(tmp: Path, path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of the local ``path`` (same suffix, nothing there yet) for the block to
    write, file or folder. When the block ends without error it replaces ``path`` (an earlier file
    or folder there is removed first); on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path)
    try:
        yield tmp
        _replace(tmp, path)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_copy(src: str | Path, path: str | Path) -> None:
    """Copy the local file ``src`` to ``path`` so that ``path`` is never seen half-copied."""
    with atomic_path(path) as tmp:
        shutil.copyfile(src, tmp)


@contextmanager
def staged_directory(out: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder (already created); on success it replaces ``out``, on any
    error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(tmp: str | Path, path: str | Path) -> None:
    """Move a finished local file or folder ``tmp``, written beside ``path`` by a caller that keeps
    it across processes or runs (a resumable job's partial output), into place in one rename."""
    _replace(Path(tmp), Path(path))
