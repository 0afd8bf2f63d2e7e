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


_ANSI = __import__("re").compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (Ray colours the task names in its errors)."""
    return _ANSI.sub("", text)


def input_error_of(exc: BaseException) -> LodeInputError | None:
    """The ``LodeInputError`` behind an exception: itself, or one raised in a Ray worker or actor
    and wrapped by Ray (``RayTaskError.cause``, ``ActorDiedError``'s cause, chained exceptions)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, LodeInputError) and not isinstance(getattr(e, "cause", None), BaseException):
            return e if type(e) is LodeInputError else LodeInputError(e.source, e.reason)
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
        for value in [*getattr(e, "args", ()), *vars(e).values()]:
            members = (
                value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            )
            todo += [m for m in members if isinstance(m, BaseException)]
    return None
