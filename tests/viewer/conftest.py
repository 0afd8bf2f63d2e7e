"""One headless Chromium for the viewer tests, and ``lode view`` servers started as subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.viewer.cdp import Chromium, browser_path

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "engine" / "view" / "web" / "dist" / "viewer.js"


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    if browser_path() is None:
        pytest.fail("no headless browser: install the Debian package 'chromium' (make sysdeps)")
    if not BUNDLE.is_file():
        pytest.fail(f"{BUNDLE} missing: run `make viewer` (npm ci + esbuild)")
    chrome = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()


class ViewProcess:
    """``python -m jobs.view OUT --port 0 --request-log LOG`` running until :meth:`stop`."""

    def __init__(self, out: Path, log: Path):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.view", str(out), "--port", "0", "--request-log", str(log)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"lode view did not start: {line}{self.proc.stderr.read() if self.proc.stderr else ''}")
        self.url = m.group(1)

    def requests(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class InProcessView:
    """The ``lode view`` server of ``out`` on a thread of this process (no interpreter start)."""

    def __init__(self, out: Path):
        from engine.view.server import ViewServer
        from engine.view.site import Site

        self.lines: list[str] = []
        self.server = ViewServer(Site(out), 0, self.lines.append).start()
        self.url = self.server.url

    def requests(self) -> list[str]:
        return list(self.lines)

    def stop(self) -> None:
        self.server.stop()
