"""Shared ``python -m jobs.<name>`` entry point."""

from __future__ import annotations

import sys

from jobs.contract import Job, parse, run_job


def run_module(job: Job) -> None:
    sys.exit(run_job(job, parse(job, sys.argv[1:], prog=f"python -m jobs.{job.name}")))
