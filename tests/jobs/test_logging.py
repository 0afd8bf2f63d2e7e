"""Job logging never depends on which stream was stderr when it was set up."""

import io
import logging
import sys

from jobs.common import setup_logging


def test_a_closed_earlier_stderr_does_not_break_logging(monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging()
    setup_logging(fmt="%(message)s")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("lode.test").info("block 3 of 12 done")
    assert second.getvalue() == "block 3 of 12 done\n"
    assert sum(type(h).__name__ == "_CurrentStderr" for h in logging.getLogger().handlers) == 1
