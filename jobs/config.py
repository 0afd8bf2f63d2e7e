"""Job configs: ``lode config schema JOB`` prints the JSON Schema of a job's config file;
``lode config check JOB FILE`` validates a config file (local path or URI) against it."""

from __future__ import annotations

import argparse
import json
import sys

URI_ARGS = ("file",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.cli import SUBCOMMANDS

    jobs = sorted(set(SUBCOMMANDS) - {"config"})
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = sub.add_parser("schema", help="print the JSON Schema of a job's config")
    s.add_argument("job", choices=jobs)
    c = sub.add_parser("check", help="validate a config file and print the resolved config")
    c.add_argument("job", choices=jobs)
    c.add_argument("file", help="JSON or YAML config file (path or URI)")


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from engine.errors import LodeInputError
    from jobs.common import config_model
    from schemas.config import read_config_file

    model = config_model(args.job)
    if args.action == "schema":
        print(json.dumps(model.model_json_schema(), indent=1))
        return 0
    try:
        cfg = model.model_validate(read_config_file(args.file))
    except LodeInputError as exc:
        print(f"lode config: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"lode config: error: {args.file}: {exc}", file=sys.stderr)
        return 2
    print(cfg.model_dump_json(indent=1))
    return 0


if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(sys.modules[__name__])
