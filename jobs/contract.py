"""The job contract: a :class:`Job` declares everything the command line, config files, URI staging,
the output probe and the manifest need; :func:`parse` and :func:`run_job` derive them from it.

A job module declares ``JOB = Job(...)`` and is listed in :data:`jobs.cli.SUBCOMMANDS`. Its options
(``arguments``) define the argparse parser; its config model is ``config`` (hand-written in
:mod:`schemas.config`) or is derived from those options (:func:`schemas.config.model_from_parser`),
so a config file and the command line can never disagree. ``run`` receives the validated config.

Every failure goes through :func:`run_job`: one line ``lode <job>: error: <input>: <reason>`` on
stderr, exit code 2 for bad input (a :class:`~engine.errors.LodeInputError`, raised here or in a Ray
worker, or an invalid option), and a manifest recording the failure and its error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import LodeInputError, input_error_of, strip_ansi
from jobs.common import location

CONFIG_HELP = "JSON or YAML config file, local or URI (validated; CLI flags override it)"


@dataclass
class Job:
    """One ``lode`` job.

    - ``arguments``: adds the job's options (and actions, as subparsers) to a parser.
    - ``run``: the job body, given the validated config; returns an exit code (``None`` = 0).
    - ``config``: the job's hand-written pydantic model; ``None`` derives it from ``arguments``.
    - ``outputs``: output options besides ``out``, each ``"file"`` or ``"folder"``.
    - ``file_out``: ``out`` is a file (not a folder) when option ``k`` holds one of ``file_out[k]``.
    - ``uri_fields``: options the job reads or writes at object-store URIs itself; any other URI
      option is staged through a local copy.
    - ``own_manifest``: the job writes its run manifest itself.
    - ``default_outputs``: fills output options left unset from the others, before the probe.
    """

    name: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Any], int | None]
    description: str | None = None
    config: type[Any] | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)
    file_out: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    uri_fields: tuple[str, ...] = ()
    own_manifest: bool = False
    default_outputs: Callable[[argparse.Namespace], None] | None = None

    def parser(self, prog: str | None = None) -> argparse.ArgumentParser:
        """The job's parser with ``--config`` on it and on every action's parser."""
        parser = argparse.ArgumentParser(
            prog=prog or f"lode {self.name}",
            description=self.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.arguments(parser)
        for i, p in enumerate([parser, *_subparsers(parser)]):
            p.add_argument("--config", default=None if i == 0 else argparse.SUPPRESS, help=CONFIG_HELP)
        return parser

    def model(self) -> Any:
        """The pydantic model of the job's config (a discriminated union for a job with actions)."""
        if self.config is not None:
            return self.config
        from schemas.config import model_from_parser

        return model_from_parser(self.name, self.parser())

    def validate(self, args: argparse.Namespace) -> Any:
        """The config ``run`` receives: the parsed options validated by :meth:`model`."""
        from pydantic import RootModel

        data = {k: v for k, v in vars(args).items() if k != "config"}
        if self.config is not None:  # a hand-written model holds the defaults of options left unset
            data = {k: v for k, v in data.items() if v is not None and v != []}
        cfg = self.model().model_validate(data)
        return cfg.root if isinstance(cfg, RootModel) else cfg

    def output_kinds(self, args: argparse.Namespace) -> dict[str, str]:
        """What each output option names, ``"file"`` or ``"folder"`` (``out``: a folder or zarr store
        unless ``file_out`` says otherwise)."""
        file_out = any(vars(args).get(dest) in values for dest, values in self.file_out.items())
        return {"out": "file" if file_out else "folder", **self.outputs}

    def path_options(self) -> set[str]:
        parser = self.parser()
        return {a.dest for p in [parser, *_subparsers(parser)] for a in p._actions if a.type in (Path, location)}


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The action parsers, each once (an alias maps to the same parser)."""
    found = [p for a in parser._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]
    return list({id(p): p for p in found}.values())


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


def parse(job: Job, argv: list[str], prog: str | None = None) -> argparse.Namespace:
    """Parse a job's command line; with ``--config FILE`` the file's values are validated by the job's
    model, command-line flags override them, and the merged values land on the namespace."""
    parser = job.parser(prog)
    if "--config" not in argv and not any(a.startswith("--config=") for a in argv):
        return parser.parse_args(argv)
    explicit_parser = job.parser(prog)
    _explicit_parser(explicit_parser)
    explicit = {k: v for k, v in vars(explicit_parser.parse_args(argv)).items() if v is not argparse.SUPPRESS}
    path = explicit.pop("config")
    from pydantic import ValidationError

    from schemas.config import read_config_file

    data = read_config_file(path)
    data.update(explicit)
    try:
        cfg = job.model().model_validate(data)
    except ValidationError as exc:
        parser.error(f"config {path} (with command-line overrides) is invalid:\n{exc}")
    values = cfg.model_dump()
    parsers = [parser]  # the job's options and those of the action the config chose
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.append(action.choices[values[action.dest]])
    args = argparse.Namespace(
        **{
            a.dest: a.default
            for p in parsers
            for a in p._actions
            if a.dest != argparse.SUPPRESS and a.default is not argparse.SUPPRESS
        }
    )
    for k, v in values.items():
        setattr(args, k, tuple(v) if isinstance(v, list) and isinstance(getattr(args, k, None), tuple) else v)
    args.config = path
    return args


def stage_uris(job: Job, args: argparse.Namespace, tmp: Path) -> list[tuple[Path, str]]:
    """Hand the job local copies of the URI options it does not read or write itself (those not in
    its ``uri_fields``): an input is downloaded; an output (``out`` and the job's ``outputs``) gets a
    local folder, holding what the store already has there so that a job extending or resuming its
    output sees it. Returns ``(local folder, URI of its parent)`` pairs for :func:`commit_uris`."""
    from engine.io import fs

    outputs = {"out", *job.outputs}
    paths: set[str] | None = None
    uploads: list[tuple[Path, str]] = []
    for dest, value in sorted(vars(args).items()):
        many = isinstance(value, (list, tuple))
        items = list(value) if many else [value]
        if dest in job.uri_fields or dest == "config" or not any(isinstance(v, str) and fs.is_uri(v) for v in items):
            continue
        paths = job.path_options() if paths is None else paths
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


def validation_message(exc: Any, tagged: bool = False) -> str:
    """One line naming every invalid option of a pydantic ``ValidationError``, as its flag (``tagged``: the
    error is of a union discriminated by the action, whose value leads each error's location)."""
    parts = []
    for err in exc.errors():
        loc = err.get("loc", ())[1 if tagged else 0 :]
        field_name = next((str(p) for p in loc if isinstance(p, str)), "")
        flag = f"--{field_name.replace('_', '-')}" if field_name else "config"
        got = err.get("input")
        parts.append(f"{flag}: {err.get('msg', 'invalid')}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
    return "; ".join(parts)


def _failure(exc: BaseException, tagged: bool = False) -> tuple[str, bool]:
    """The one-line message of a failure, and whether it is bad input (exit 2) rather than a bug."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return validation_message(exc, tagged), True
    cause = input_error_of(exc)
    if cause is not None:
        return strip_ansi(str(cause)), True
    return strip_ansi(f"{type(exc).__name__}: {exc}"), False


def _probe_outputs(job: Job, args: argparse.Namespace) -> None:
    """Refuse an output that cannot be written (a file in the way, a folder that is a file) before any work."""
    from engine.io import fs
    from engine.io.manifest import check_output

    out = vars(args).get("out")
    if out is not None and str(out).startswith("file://"):
        args.out = type(out)(fs.local(str(out)))
    for dest, kind in job.output_kinds(args).items():
        value = vars(args).get(dest)
        if value is not None and (dest == "out" or not fs.is_uri(str(value))):
            check_output(str(value), kind=kind)


def run_job(job: Job, args: argparse.Namespace) -> int:
    """Run a parsed job: fill default outputs, probe them, stage URI options, validate the config, run,
    and record a manifest (unless the job keeps its own). The only place a job's errors are caught:
    bad input prints one line naming it and returns 2; any other error is recorded and raised."""
    from pydantic import ValidationError

    from engine.io import fs
    from engine.io.manifest import write_job_manifest

    if job.default_outputs is not None:
        job.default_outputs(args)
    try:
        _probe_outputs(job, args)
    except LodeInputError as exc:  # nothing is started or written: no manifest
        print(f"lode {job.name}: error: {strip_ansi(str(exc))}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix=f"lode-{job.name}-") as tmp:
        t0 = time.perf_counter()
        status, error, uploads, rc = "failed", None, [], 2
        record: dict[str, Any] | None = dict(vars(args))
        config = None
        try:
            uploads = stage_uris(job, args, Path(tmp))
            config = job.validate(args)
            rc = int(job.run(config) or 0)
            status = "complete" if rc == 0 else "failed"
            error = None if rc == 0 else f"exit code {rc}"
            return rc
        except BaseException as exc:
            error, bad_input = _failure(exc, tagged=config is None and bool(_subparsers(job.parser())))
            if not bad_input:
                raise
            print(f"lode {job.name}: error: {error}", file=sys.stderr)
            if isinstance(exc, ValidationError) and config is None:
                record = None  # refused before any work: nothing to record
            return 2
        finally:
            out = vars(args).get("out")
            # a run refused before it wrote its output leaves nothing, not even a failed manifest
            recorded = out is not None and (status == "complete" or fs.exists(str(out)))
            if recorded and record is not None and not job.own_manifest:
                write_job_manifest(
                    str(out), job.name, record, {"total_s": time.perf_counter() - t0}, status, error=error
                )
            commit_uris(uploads, data=status == "complete")
