"""One headless Chromium for the viewer tests (engine.view.headless), and ``lode view`` servers
started in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.view.headless import Chromium, browser_path
from engine.view.server import bundle_missing


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    if browser_path() is None:
        pytest.fail("no headless browser: install the Debian package 'chromium' (make sysdeps)")
    if bundle_missing():
        pytest.fail("engine/view/web/dist/viewer.js missing: run `make viewer` (npm ci + esbuild)")
    chrome = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()


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
