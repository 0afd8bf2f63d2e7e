"""Run manifests: versions, config, timings and per-unit status, written atomically.

Each finished unit (block) leaves a small status file under ``_status/`` written only
after its data is on disk; ``manifest.json`` is the summary. A rerun with the same
fingerprint resumes (skips units with a status file); another fingerprint is refused.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import LodeInputError
from engine.io.atomic import atomic_write_text

MIN_FREE_BYTES = 64 * 1024 * 1024


def is_uri(path: str | Path) -> bool:
    """True for object-store and other fsspec URIs (``s3://``, ``gs://``, ``memory://``), not for ``file://``."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def check_output(out: str | Path, min_free: int = MIN_FREE_BYTES) -> None:
    """Fail fast, before any work, when an output cannot be written: the nearest existing folder
    of ``out`` must take a file, and its disk must have ``min_free`` bytes free. Creates nothing."""
    if is_uri(out):
        return
    target = Path(str(out).removeprefix("file://")).absolute()
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
        raise LodeInputError(out, f"output disk is full: only {free // 2**20} MiB free "
                                  f"(need at least {min_free // 2**20} MiB)")


def manifest_path(out: str | Path) -> Path:
    """Where a job writes its manifest: inside an output folder, beside an output file or zarr store."""
    p = Path(str(out).removeprefix("file://"))
    if p.is_dir() and p.suffix != ".zarr" and not (p / "zarr.json").exists():
        return p / "manifest.json"
    return p.with_name(p.name + ".manifest.json")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def write_job_manifest(out: str | Path, job: str, config: dict, timings: dict[str, float], status: str,
                       units: dict[str, dict] | None = None, error: str | None = None) -> Path | None:
    """Record a run (versions, config, timings, status, per-unit status); a failed run keeps the
    record of the run it replaces under ``previous``. Object-store outputs get no manifest here."""
    if is_uri(out):
        return None
    path = manifest_path(out)
    if not path.parent.exists():
        return None
    doc: dict[str, Any] = {"job": job, "status": status, "versions": versions(), "config": _jsonable(config),
                           "timings": timings, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if units is not None:
        doc["units"] = _jsonable(units)
    if error:
        doc["error"] = error
    if status != "complete" and path.exists():
        try:
            prev = json.loads(path.read_text())
            prev.pop("previous", None)
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
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.path = self.out / "manifest.json"
        self.status_dir = self.out / "_status"
        self.failed_dir = self.out / "_failed"

    def check_writable(self) -> None:
        check_output(self.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def read(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise LodeInputError(self.path, f"corrupt manifest: {exc}") from exc

    def begin(self, job: str, config: dict, fingerprint: dict) -> bool:
        """Start or resume a run; returns True when starting fresh."""
        prev = self.read()
        fp = json.loads(json.dumps(fingerprint))
        if prev is not None and prev.get("fingerprint") != fp:
            raise LodeInputError(self.out, "holds a run with another model, inputs or layout; choose a new output")
        fresh = prev is None
        if fresh and self.status_dir.exists():
            shutil.rmtree(self.status_dir)
        if self.failed_dir.exists():
            shutil.rmtree(self.failed_dir)  # failed units are retried
        doc = {"job": job, "status": "running", "versions": versions(), "config": config, "fingerprint": fp,
               "started": prev.get("started") if prev else time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "attempts": (prev.get("attempts", 0) if prev else 0) + 1}
        atomic_write_text(self.path, json.dumps(doc, indent=1))
        return fresh

    def mark_done(self, status: BlockStatus) -> None:
        atomic_write_text(self.status_dir / status.section / f"{status.key}.json", json.dumps(asdict(status)))

    def mark_failed(self, section: str, key: str, reason: str) -> None:
        atomic_write_text(self.failed_dir / section / f"{key}.json", json.dumps({"reason": reason}))

    def failed(self) -> dict[str, str]:
        """Reason per failed unit ``section/key`` of this attempt."""
        if not self.failed_dir.exists():
            return {}
        return {f"{p.parent.name}/{p.stem}": json.loads(p.read_text())["reason"]
                for p in self.failed_dir.glob("*/*.json")}

    def done(self) -> dict[str, dict]:
        out = {}
        if self.status_dir.exists():
            for p in self.status_dir.glob("*/*.json"):
                out[f"{p.parent.name}/{p.stem}"] = json.loads(p.read_text())
        return out

    def done_keys(self) -> set[str]:
        return set(self.done())

    def finish(self, timings: dict[str, float], expected: list[str], skipped: int = 0) -> dict[str, Any]:
        doc = self.read() or {}
        done, failed = self.done(), self.failed()

        def state(k: str) -> dict:
            if k in done:
                return {"status": "done", **done[k]}
            return {"status": "failed", "reason": failed[k]} if k in failed else {"status": "pending"}

        blocks = [{"unit": k, **state(k)} for k in expected]
        complete = all(b["status"] == "done" for b in blocks)
        doc.update({"status": "complete" if complete else "partial", "timings": timings, "blocks": blocks,
                    "failed_sections": {k.split("/")[0]: r for k, r in sorted(failed.items())},
                    "skipped_already_done": skipped, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        atomic_write_text(self.path, json.dumps(doc, indent=1))
        return doc
