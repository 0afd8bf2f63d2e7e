"""Helpers shared by job entry points: logging, config files with CLI overrides, clean errors."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from engine.errors import LodeInputError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON config file (validated; CLI flags override it)")


def guarded(fn: Callable[[], int]) -> int:
    """Run a job body; a user-caused error prints one clear line and exits 2."""
    try:
        return fn()
    except LodeInputError as exc:
        print(f"lode: error: {exc}", file=sys.stderr)
        return 2
