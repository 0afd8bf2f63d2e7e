"""Helpers job modules share: console logging and the path-or-URI option type."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted, so a stream
    replaced and closed since (a test's capture, a redirected console) never breaks logging."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbose: bool = False, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """Console logging for a job: one handler on the root logger, installed once."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler = next((h for h in root.handlers if isinstance(h, _CurrentStderr)), None)
    if handler is None:
        handler = _CurrentStderr()
        root.addHandler(handler)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))


def quiet_ray_data() -> None:
    """Keep Ray Data's per-execution progress and INFO lines off the console (a job prints its own
    progress per stage); its warnings and errors still show."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def location(text: str) -> Path | str:
    """Argument type for a path that may also be an object-store URI: a ``Path``, or the URI as text."""
    from engine.io.fs import is_uri

    return text if is_uri(text) else Path(text)
