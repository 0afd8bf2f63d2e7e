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
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import LodeInputError
from engine.io.atomic import atomic_write_text

MIN_FREE_BYTES = 64 * 1024 * 1024


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

    def check_writable(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"0")
            probe.unlink()
        except OSError as exc:
            raise LodeInputError(self.out, f"output is not writable: {exc}") from exc
        free = shutil.disk_usage(self.out).free
        if free < MIN_FREE_BYTES:
            raise LodeInputError(self.out, f"only {free // 2**20} MiB free on the output disk")

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
        doc = {"job": job, "status": "running", "versions": versions(), "config": config, "fingerprint": fp,
               "started": prev.get("started") if prev else time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "attempts": (prev.get("attempts", 0) if prev else 0) + 1}
        atomic_write_text(self.path, json.dumps(doc, indent=1))
        return fresh

    def mark_done(self, status: BlockStatus) -> None:
        atomic_write_text(self.status_dir / status.section / f"{status.key}.json", json.dumps(asdict(status)))

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
        done = self.done()
        blocks = [{"unit": k, "status": "done" if k in done else "pending", **done.get(k, {})} for k in expected]
        complete = all(b["status"] == "done" for b in blocks)
        doc.update({"status": "complete" if complete else "partial", "timings": timings, "blocks": blocks,
                    "skipped_already_done": skipped, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        atomic_write_text(self.path, json.dumps(doc, indent=1))
        return doc
