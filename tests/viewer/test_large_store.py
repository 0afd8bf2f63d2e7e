"""A 12000×8000 section opens in headless Chromium without errors, and a pan to a new region reads
only the chunks that region shows (from the server's request log). Its speed is measured by
``python -m benchmarks.viewer``, not here."""

from __future__ import annotations

import pytest

from benchmarks.viewer import LABELS, chunks_in_view, chunks_read, pan_rect, write_store
from engine.view.headless import ViewProcess

pytestmark = pytest.mark.slow
H, W = 8000, 12000


def test_large_store_opens_and_pans_by_chunk(browser, tmp_path_factory):
    out = tmp_path_factory.mktemp("big")
    store = out / "lode.ome.zarr"
    write_store(store, "big", H, W)
    with ViewProcess(out, out / "requests.log") as view:
        browser.goto(view.url)
        browser.evaluate("lode.ready.then(() => lode.idle())")
        assert browser.console_errors() == []
        n_first = len(view.requests())
        x, y, w, h = rect = pan_rect((H, W))
        browser.evaluate(f"lode.showImageRect({x}, {y}, {w}, {h}); lode.idle()")
        assert browser.console_errors() == []
        panned = view.requests()[n_first:]
    read = chunks_read(store, "big", panned)
    assert ("", 0) in read and (LABELS, 0) in read, (read.keys(), panned)
    for (prefix, level), chunks in read.items():
        needed = chunks_in_view((H, W), level, rect)
        assert chunks <= needed, (prefix, level, sorted(chunks - needed))
