"""Helpers shared by job entry points: parsing with config files, output preflight, run manifests, clean errors."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from engine.errors import LodeInputError, input_error_of, strip_ansi


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


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON or YAML config file, local or URI (validated; CLI flags override it)")


def guarded(fn: Callable[[], int]) -> int:
    """Run a job body; a user-caused error raised in a Ray worker or actor is unwrapped, so that
    :func:`run_job` prints it in one line, records it in the manifest and exits 2."""
    try:
        return fn()
    except LodeInputError:
        raise
    except Exception as exc:
        cause = input_error_of(exc)
        if cause is None:
            raise
        raise cause from None


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [p for a in parser._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]


def job_parser(name: str, module: ModuleType, prog: str | None = None,
               description: str | None = None) -> argparse.ArgumentParser:
    """The job's parser with ``--config`` on it and on every action's parser."""
    parser = argparse.ArgumentParser(prog=prog or f"lode {name}", description=description or module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    for i, p in enumerate([parser, *_subparsers(parser)]):
        if not any(a.dest == "config" for a in p._actions):
            p.add_argument("--config", default=None if i == 0 else argparse.SUPPRESS,
                           help="JSON or YAML config file, local or URI (validated; CLI flags override it)")
    return parser


def _explicit_parser(parser: argparse.ArgumentParser) -> None:
    """Make a parser report only what the command line gives, and require nothing (a config may supply it)."""
    for p in [parser, *_subparsers(parser)]:
        p._defaults.clear()
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            a.default = argparse.SUPPRESS
            a.required = False
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction):
                a.nargs = "*" if a.nargs in ("+", "*") else "?"


def config_model(name: str) -> Any:
    """The pydantic model of a job's config: hand-written in ``schemas.config`` or derived from its options."""
    from schemas.config import CONFIGS, model_from_parser

    if name in CONFIGS:
        return CONFIGS[name]
    from jobs.cli import SUBCOMMANDS

    return model_from_parser(name, job_parser(name, importlib.import_module(SUBCOMMANDS[name][0])))


def parse_job_args(name: str, module: ModuleType, argv: list[str], prog: str | None = None,
                   description: str | None = None) -> argparse.Namespace:
    """Parse a job's command line; with ``--config FILE`` the file's values are validated by the job's
    pydantic model, command-line flags override them, and the merged values land on the namespace."""
    parser = job_parser(name, module, prog, description)
    if "--config" not in argv and not any(a.startswith("--config=") for a in argv):
        return parser.parse_args(argv)
    explicit_parser = job_parser(name, module, prog, description)
    _explicit_parser(explicit_parser)
    explicit = {k: v for k, v in vars(explicit_parser.parse_args(argv)).items() if v is not argparse.SUPPRESS}
    path = explicit.pop("config")
    from pydantic import ValidationError

    from schemas.config import read_config_file

    data = read_config_file(path)
    data.update(explicit)
    model = config_model(name)
    try:
        cfg = model.model_validate(data)
    except ValidationError as exc:
        parser.error(f"config {path} (with command-line overrides) is invalid:\n{exc}")
    values = cfg.model_dump()
    args = argparse.Namespace(**{a.dest: a.default for p in [parser, *_subparsers(parser)] for a in p._actions
                                 if a.dest != argparse.SUPPRESS and a.default is not argparse.SUPPRESS})
    for k, v in values.items():
        setattr(args, k, tuple(v) if isinstance(v, list) and isinstance(getattr(args, k, None), tuple) else v)
    args.config = path
    return args


def location(text: str) -> Path | str:
    """Argument type for a path that may also be an object-store URI: a ``Path``, or the URI as text."""
    from engine.io.fs import is_uri

    return text if is_uri(text) else Path(text)


def output_of(args: argparse.Namespace) -> str | None:
    out = getattr(args, "out", None)
    return None if out is None else str(out)


def output_kinds(module: ModuleType, args: argparse.Namespace) -> dict[str, str]:
    """What each output argument names, ``"file"`` or ``"folder"``: ``out`` is a folder (a zarr store
    too) unless the module's ``FILE_OUT`` (option → values) lists the action run; the module's
    ``OUTPUT_ARGS`` map their options to their kinds."""
    file_out = any(getattr(args, dest, None) in values for dest, values in getattr(module, "FILE_OUT", {}).items())
    return {"out": "file" if file_out else "folder", **getattr(module, "OUTPUT_ARGS", {})}


def _path_dests(name: str, module: ModuleType) -> set[str]:
    parser = job_parser(name, module)
    return {a.dest for p in [parser, *_subparsers(parser)] for a in p._actions if a.type in (Path, location)}


def stage_uris(name: str, module: ModuleType, args: argparse.Namespace, tmp: Path) -> list[tuple[Path, str]]:
    """Hand the job local copies of the URI arguments it does not read or write itself (those not in
    its ``URI_ARGS``): an input is downloaded; an output (``out`` and the job's ``OUTPUT_ARGS``) gets a
    local folder, holding what the store already has there so that a job extending or resuming its
    output sees it. Returns ``(local folder, URI of its parent)`` pairs for :func:`commit_uris`."""
    from engine.io import fs

    native = set(getattr(module, "URI_ARGS", ()))
    outputs = {"out", *getattr(module, "OUTPUT_ARGS", ())}
    paths = None
    uploads: list[tuple[Path, str]] = []
    for dest, value in sorted(vars(args).items()):
        many = isinstance(value, (list, tuple))
        items = list(value) if many else [value]
        if dest in native or dest == "config" or not any(isinstance(v, str) and fs.is_uri(v) for v in items):
            continue
        paths = _path_dests(name, module) if paths is None else paths
        staged = []
        for i, v in enumerate(items):
            if not (isinstance(v, str) and fs.is_uri(v)):
                staged.append(v)
                continue
            where = tmp / f"{dest}-{i}"
            if dest in outputs:
                where.mkdir(parents=True)
                if fs.exists(v):
                    fs.download(v, where)
                local = where / fs.name(v)
                uploads.append((where, fs.parent(v)))
            else:
                local = fs.download(v, where)
            staged.append(local if dest in paths else str(local))
        setattr(args, dest, type(value)(staged) if many else staged[0])
    return uploads


def commit_uris(uploads: list[tuple[Path, str]], data: bool) -> None:
    """Upload staged outputs: the data (when ``data``), then the manifests, which commit it."""
    from engine.io import fs

    for where, parent in uploads:
        entries = sorted(where.iterdir(), key=lambda p: p.name.endswith("manifest.json"))
        for entry in entries:
            if data or entry.name.endswith("manifest.json"):
                fs.upload(entry, fs.join(parent, entry.name))


def validation_message(exc: Exception) -> str:
    """One line naming every invalid option of a pydantic ``ValidationError``, as its flag."""
    parts = []
    for err in exc.errors():  # type: ignore[attr-defined]
        field = next((str(p) for p in err.get("loc", ()) if isinstance(p, str)), "")
        flag = f"--{field.replace('_', '-')}" if field else "config"
        got = err.get("input")
        parts.append(f"{flag}: {err.get('msg', 'invalid')}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
    return "; ".join(parts)


def run_job(name: str, module: ModuleType, args: argparse.Namespace) -> int:
    """Preflight the output (fail fast before any work), run the job, and record a manifest unless
    the job keeps its own (``OWN_MANIFEST``). Object-store URIs work for every job: a job reads and
    writes those in its ``URI_ARGS`` itself (zarr through fsspec, Parquet through pyarrow); any other
    URI argument is staged through a local copy (:func:`stage_uris`) and committed after the run."""
    import tempfile

    from pydantic import ValidationError

    from engine.io import fs
    from engine.io.manifest import check_output, write_job_manifest

    if hasattr(module, "default_outputs"):
        module.default_outputs(args)
    out = output_of(args)
    try:
        if out is not None and out.startswith("file://"):
            out = fs.local(out)
            args.out = type(args.out)(out)
        for dest, kind in output_kinds(module, args).items():
            value = getattr(args, dest, None)
            if value is not None and (dest == "out" or not fs.is_uri(str(value))):
                check_output(str(value), kind=kind)
    except LodeInputError as exc:
        print(f"lode {name}: error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix=f"lode-{name}-") as tmp:
        t0 = time.perf_counter()
        status, error, uploads, rc = "failed", None, [], 2
        config: dict | None = dict(vars(args))
        try:
            uploads = stage_uris(name, module, args, Path(tmp))
            rc = int(module.run(args) or 0)
            status = "complete" if rc == 0 else "failed"
            return rc
        except LodeInputError as exc:
            error = strip_ansi(str(exc))
            print(f"lode {name}: error: {error}", file=sys.stderr)
            return 2
        except ValidationError as exc:
            error = validation_message(exc)
            print(f"lode {name}: error: {error}", file=sys.stderr)
            config = None  # refused before any work: nothing to record
            return 2
        except BaseException as exc:
            cause = input_error_of(exc)
            if cause is not None:
                error = strip_ansi(str(cause))
                print(f"lode {name}: error: {error}", file=sys.stderr)
                return 2
            error = strip_ansi(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            staged_out = output_of(args)
            # a run refused before it wrote its output leaves nothing, not even a failed manifest
            recorded = staged_out is not None and (status == "complete" or fs.exists(staged_out))
            if recorded and config is not None and not getattr(module, "OWN_MANIFEST", False):
                write_job_manifest(staged_out, name, config, {"total_s": time.perf_counter() - t0}, status,
                                   error=error)
            commit_uris(uploads, data=error is None and rc != 2)
