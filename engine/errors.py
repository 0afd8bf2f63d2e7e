"""Errors a user can cause; each names the input it is about."""

from __future__ import annotations

from pathlib import Path


class LodeInputError(ValueError):
    """Bad user input: missing or corrupt file, wrong shape, unknown class code, NaN grid."""

    def __init__(self, source: str | Path, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")

    def __reduce__(self):
        # Ray ships task errors between processes by pickling them
        return type(self), (self.source, self.reason)
