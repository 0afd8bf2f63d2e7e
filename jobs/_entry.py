"""Shared ``python -m jobs.<name>`` entry point."""

from __future__ import annotations

import sys
from types import ModuleType


def run_module(module: ModuleType, description: str | None = None) -> None:
    from jobs.common import parse_job_args, run_job

    full = module.__spec__.name if module.__spec__ else module.__name__
    name = full.rsplit(".", 1)[-1]
    args = parse_job_args(name, module, sys.argv[1:], prog=f"python -m {full}", description=description)
    sys.exit(run_job(name, module, args))
