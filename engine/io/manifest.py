"""Run manifests: versions, config, timings and per-unit status, written atomically.

Each finished unit (block) leaves a small status file under ``_status/`` written only
after its data is written: on an object store, where a store of many objects cannot be
renamed into place, that status object is the unit's commit marker. ``manifest.json`` is
the summary. A rerun with the same fingerprint resumes (skips units with a status file);
another fingerprint is refused. Outputs may be local paths or fsspec URIs.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import LodeInputError
from engine.io import fs
from engine.io.atomic import atomic_write_text
from engine.io.fs import is_uri

MIN_FREE_BYTES = 64 * 1024 * 1024


def check_output(out: str | Path, min_free: int = MIN_FREE_BYTES, kind: str = "any") -> None:
    """Fail fast, before any work, when an output cannot be written: a local ``out`` that exists
    must be of its ``kind`` (``"folder"``, ``"file"`` or ``"any"``), the nearest existing folder of
    ``out`` must take a file, and its disk must have ``min_free`` bytes free; an object-store output
    must take (and give back) a probe object. Leaves nothing behind."""
    if is_uri(out):
        probe = fs.join(out, f".write-probe-{uuid.uuid4().hex}")
        try:
            atomic_write_text(probe, "")
            fs.remove(probe)
        except Exception as exc:  # every store and client raises its own types
            raise LodeInputError(out, f"output is not writable: {exc}") from exc
        return
    target = Path(fs.local(out)).absolute()
    if kind == "folder" and target.exists() and not target.is_dir():
        raise LodeInputError(out, "output exists and is not a folder")
    if kind == "file" and target.is_dir():
        raise LodeInputError(out, "output is a folder, not a file")
    probe_dir = target if target.is_dir() else target.parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise LodeInputError(out, f"output is not writable: {probe_dir} is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".write-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise LodeInputError(out, f"output is not writable: {exc}") from exc
    free = shutil.disk_usage(probe_dir).free
    if free < min_free:
        raise LodeInputError(
            out, f"output disk is full: only {free // 2**20} MiB free (need at least {min_free // 2**20} MiB)"
        )


def manifest_path(out: str | Path) -> str:
    """Where a job writes its manifest: inside an output folder, beside an output file or zarr store."""
    out = fs.local(out)
    if fs.isdir(out) and not fs.name(out).endswith(".zarr") and not fs.exists(fs.join(out, "zarr.json")):
        return fs.join(out, "manifest.json")
    return fs.join(fs.parent(out), fs.name(out) + ".manifest.json")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def write_job_manifest(
    out: str | Path,
    job: str,
    config: dict,
    timings: dict[str, float],
    status: str,
    units: dict[str, dict] | None = None,
    error: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str | None:
    """Record a run (versions, config, timings, status, per-unit status, ``extra`` fields); a failed
    run keeps the record of the run it replaces under ``previous``. A ``running`` record is a run's
    progress, not a run to keep: the record after it keeps what it kept."""
    path = manifest_path(out)
    if not fs.exists(fs.parent(path)):
        return None
    doc: dict[str, Any] = {
        "job": job,
        "status": status,
        "versions": versions(),
        "config": _jsonable(config),
        "timings": timings,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if units is not None:
        doc["units"] = _jsonable(units)
    doc.update(_jsonable(extra or {}))
    if error:
        doc["error"] = error
    if status != "complete" and fs.exists(path):
        try:
            prev = json.loads(fs.read_bytes(path))
            if prev.get("status") == "running":
                prev = prev.get("previous")
            else:
                prev.pop("previous", None)
            if prev is not None:
                doc["previous"] = prev
        except json.JSONDecodeError:
            pass
    atomic_write_text(path, json.dumps(doc, indent=1))
    return path


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("lode-engine", "ray", "torch", "zarr", "segmentation-models-pytorch", "numpy", "pyarrow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass(frozen=True)
class BlockStatus:
    section: str
    key: str
    index: int
    y0: int
    x0: int
    h: int
    w: int
    windows: int = 0
    seconds: float = 0.0


class RunManifest:
    """A resumable run's record at a local path or URI: ``manifest.json``, ``_status/`` (done units)
    and ``_failed/`` (units that failed in this attempt, with their reason)."""

    def __init__(self, out: str | Path):
        self.out = fs.local(out)
        self.path = fs.join(self.out, "manifest.json")
        self.status_dir = fs.join(self.out, "_status")
        self.failed_dir = fs.join(self.out, "_failed")

    def check_writable(self) -> None:
        check_output(self.out, kind="folder")
        if not is_uri(self.out):
            Path(self.out).mkdir(parents=True, exist_ok=True)

    def read(self) -> dict[str, Any] | None:
        if not fs.exists(self.path):
            return None
        try:
            return json.loads(fs.read_bytes(self.path))
        except json.JSONDecodeError as exc:
            raise LodeInputError(self.path, f"corrupt manifest: {exc}") from exc

    def begin(self, job: str, config: dict, fingerprint: dict, per_unit: str | None = None) -> bool:
        """Start or resume a run; returns True when starting fresh. ``fingerprint[per_unit]`` maps
        units (sections) to what must not change for them: a unit in both runs must agree, a unit
        new to this run (one that could not be planned before) joins."""
        prev = self.read()
        fp = json.loads(json.dumps(fingerprint))
        if prev is not None:
            old = prev.get("fingerprint") or {}
            mine, theirs = dict(fp), dict(old)
            units, prev_units = mine.pop(per_unit, {}), theirs.pop(per_unit, {})
            if mine != theirs or any(units[k] != prev_units[k] for k in units.keys() & prev_units.keys()):
                raise LodeInputError(self.out, "holds a run with another model, inputs or layout; choose a new output")
            if per_unit:
                fp[per_unit] = {**prev_units, **units}
        fresh = prev is None
        if fresh:
            fs.remove(self.status_dir)
        fs.remove(self.failed_dir)  # failed units are retried
        doc = {
            "job": job,
            "status": "running",
            "versions": versions(),
            "config": config,
            "fingerprint": fp,
            "started": prev.get("started") if prev else time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "attempts": (prev.get("attempts", 0) if prev else 0) + 1,
        }
        atomic_write_text(self.path, json.dumps(doc, indent=1))
        return fresh

    def mark_done(self, status: BlockStatus) -> None:
        atomic_write_text(fs.join(self.status_dir, status.section, f"{status.key}.json"), json.dumps(asdict(status)))

    def mark_failed(self, section: str, key: str, reason: str) -> None:
        atomic_write_text(fs.join(self.failed_dir, section, f"{key}.json"), json.dumps({"reason": reason}))

    @staticmethod
    def _units(folder: str) -> dict[str, dict]:
        out = {}
        for p in fs.glob(fs.join(folder, "*", "*.json")):
            section, key = p.rsplit("/", 2)[-2:]
            out[f"{section}/{key.removesuffix('.json')}"] = json.loads(fs.read_bytes(p))
        return out

    def failed(self) -> dict[str, str]:
        """Reason per failed unit ``section/key`` of this attempt."""
        return {k: v["reason"] for k, v in self._units(self.failed_dir).items()}

    def done(self) -> dict[str, dict]:
        return self._units(self.status_dir)

    def done_keys(self) -> set[str]:
        return set(self.done())

    def abort(self, exc: BaseException) -> None:
        """Record a run that stopped on an error as ``failed`` with the error (never left ``running``)."""
        from engine.errors import input_error_of, strip_ansi

        cause = input_error_of(exc)
        doc = self.read() or {}
        doc.update(
            {
                "status": "failed",
                "error": strip_ansi(str(cause) if cause else f"{type(exc).__name__}: {exc}"),
                "failed_units": self.failed(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )
        atomic_write_text(self.path, json.dumps(doc, indent=1))

    def finish(self, timings: dict[str, float], expected: list[str], skipped: int = 0) -> dict[str, Any]:
        doc = self.read() or {}
        done, failed = self.done(), self.failed()

        def state(k: str) -> dict:
            if k in done:
                return {"status": "done", **done[k]}
            return {"status": "failed", "reason": failed[k]} if k in failed else {"status": "pending"}

        blocks = [{"unit": k, **state(k)} for k in expected]
        complete = all(b["status"] == "done" for b in blocks)
        doc.update(
            {
                "status": "complete" if complete else "partial",
                "timings": timings,
                "blocks": blocks,
                "failed_sections": {k.split("/")[0]: r for k, r in sorted(failed.items())},
                "skipped_already_done": skipped,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )
        atomic_write_text(self.path, json.dumps(doc, indent=1))
        return doc
