"""Job configs: ``lode config schema JOB`` prints the JSON Schema of a job's config file;
``lode config check JOB FILE`` validates a config file (local path or URI) against it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from jobs.contract import Job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.cli import SUBCOMMANDS

    jobs = sorted(set(SUBCOMMANDS) - {"config"})
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = sub.add_parser("schema", help="print the JSON Schema of a job's config")
    s.add_argument("job", choices=jobs)
    c = sub.add_parser("check", help="validate a config file and print the resolved config")
    c.add_argument("job", choices=jobs)
    c.add_argument("file", help="JSON or YAML config file (path or URI)")


def run(cfg: Any) -> int:
    from pydantic import ValidationError

    from engine.errors import LodeInputError
    from jobs.cli import load_job
    from jobs.contract import validation_message
    from schemas.config import read_config_file

    model = load_job(cfg.job).model()
    if cfg.action == "schema":
        print(json.dumps(model.model_json_schema(), indent=1))
        return 0
    try:
        checked = model.model_validate(read_config_file(cfg.file))
    except ValidationError as exc:
        raise LodeInputError(cfg.file, validation_message(exc)) from None
    print(checked.model_dump_json(indent=1))
    return 0


JOB = Job("config", add_arguments, run, description=__doc__, uri_fields=("file",))

if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(JOB)
