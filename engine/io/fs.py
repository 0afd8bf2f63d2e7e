"""Local paths and object-store URIs in one place: fsspec for files and zarr stores, pyarrow
filesystems for Parquet and Arrow.

A location is a local path, a ``file://`` URI or any fsspec URI (``s3://``, ``gs://``,
``memory://``). Endpoint and credentials come from the environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ...), never from
arguments, and :func:`ray_remote_args` forwards them to Ray workers so that a job submitted to a
cluster reaches the same store.

Atomicity: a local file is written under a temporary name and renamed; an object store has no
rename, but one PUT makes an object appear whole or not at all. A prefix of many objects (a zarr
store, an output folder) cannot appear at once: jobs write the data first and a commit marker
last (a block's status object, the job's ``manifest.json``), and only committed units count.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec

ENV_PREFIXES = ("AWS_", "FSSPEC_", "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_")


def is_uri(path: str | Path) -> bool:
    """True for object-store and other fsspec URIs (``s3://``, ``gs://``, ``memory://``), not for ``file://``."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def local(path: str | Path) -> str:
    """A local path or ``file://`` URI as a plain path."""
    return str(path).removeprefix("file://")


def filesystem(path: str | Path) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of a location and the path inside it."""
    if is_uri(path):
        return fsspec.core.url_to_fs(str(path))
    return fsspec.filesystem("file"), os.path.abspath(local(path))


def arrow_filesystem(path: str | Path):
    """The pyarrow filesystem of a location and the path inside it (``S3FileSystem`` for ``s3://``,
    with the endpoint and region of the environment)."""
    import pyarrow.fs as pafs

    text = str(path)
    if text.startswith("s3://"):
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return pafs.S3FileSystem(region=region, endpoint_override=endpoint), text.removeprefix("s3://")
    if is_uri(text):
        fs, inner = filesystem(text)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner
    return pafs.LocalFileSystem(), os.path.abspath(local(text))


def join(base: str | Path, *parts: str) -> str:
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(local(base), *parts))


def parent(path: str | Path) -> str:
    if is_uri(path):
        proto, rest = str(path).rstrip("/").split("://", 1)
        return f"{proto}://{rest.rsplit('/', 1)[0]}" if "/" in rest else str(path)
    return str(Path(os.path.abspath(local(path))).parent)


def name(path: str | Path) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def exists(path: str | Path) -> bool:
    fs, inner = filesystem(path)
    fs.invalidate_cache(inner)
    return fs.exists(inner)


def isdir(path: str | Path) -> bool:
    fs, inner = filesystem(path)
    fs.invalidate_cache(inner)
    return fs.isdir(inner)


def read_bytes(path: str | Path) -> bytes:
    fs, inner = filesystem(path)
    return fs.cat_file(inner)


def remove(path: str | Path) -> None:
    """Delete a file or a whole folder/prefix; a missing one is fine."""
    fs, inner = filesystem(path)
    fs.invalidate_cache(inner)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


def glob(pattern: str) -> list[str]:
    """Locations (with their scheme) matching ``pattern``, seeing what other processes wrote."""
    fs, inner = filesystem(pattern)
    fs.invalidate_cache()
    found = sorted(fs.glob(inner))
    return [fs.unstrip_protocol(p) if is_uri(pattern) else p for p in found]


def download(src: str, dest_dir: str | Path) -> Path:
    """Copy a file or folder/prefix to ``dest_dir/<name>``; returns the local copy."""
    from engine.errors import LodeInputError

    fs, inner = filesystem(src)
    fs.invalidate_cache()
    target = Path(dest_dir) / name(src)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fs.isdir(inner):
        fs.get(inner.rstrip("/") + "/", str(target), recursive=True)
    elif fs.isfile(inner):
        fs.get_file(inner, str(target))
    else:
        raise LodeInputError(src, "not found")
    return target


def upload(src: str | Path, dest: str) -> None:
    """Copy a local file or folder to ``dest``; a folder's stale objects (not in ``src``) are removed,
    its files go up before the manifests in it (the commit marker comes last)."""
    fs, inner = filesystem(dest)
    src = Path(src)
    if src.is_file():
        fs.put_file(str(src), inner)
        return
    files = sorted((p for p in src.rglob("*") if p.is_file()), key=lambda p: (p.name.endswith("manifest.json"), str(p)))
    wanted = {f"{inner.rstrip('/')}/{p.relative_to(src).as_posix()}" for p in files}
    fs.invalidate_cache()
    stale = [p for p in (fs.find(inner) if fs.isdir(inner) else []) if p not in wanted]
    if stale:
        fs.rm(stale)
    for p in files:
        fs.put_file(str(p), f"{inner.rstrip('/')}/{p.relative_to(src).as_posix()}")


_started: tuple[str, dict[str, str]] | None = None
"""The node id of the local Ray cluster this process started, and the settings its workers inherited."""


def ray_env() -> dict[str, str]:
    """The environment variables that configure object-store access (endpoint, credentials, region)."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


def note_started_cluster(node_id: str) -> None:
    """Record that this process just started the local Ray cluster of head node ``node_id``: its
    workers inherit this process's environment, so they need no runtime environment for it."""
    global _started
    _started = (node_id, ray_env())


def ray_remote_args() -> dict[str, Any]:
    """``ray_remote_args`` that hand this process's object-store settings to the workers of a stage.

    On a cluster this process started, only settings changed since are passed: a runtime
    environment makes Ray start workers of their own (seconds each) instead of reusing its pool."""
    env = ray_env()
    if _started is not None:
        import ray

        node, inherited = _started
        if ray.is_initialized() and ray.get_runtime_context().get_node_id() == node:
            env = {k: v for k, v in env.items() if inherited.get(k) != v}
    return {"runtime_env": {"env_vars": env}} if env else {}
