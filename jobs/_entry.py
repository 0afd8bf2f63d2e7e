"""Shared ``python -m jobs.<name>`` entry point."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType


def run_module(module: ModuleType, description: str | None = None) -> None:
    name = module.__spec__.name if module.__spec__ else module.__name__
    parser = argparse.ArgumentParser(prog=f"python -m {name}", description=description or module.__doc__)
    module.add_arguments(parser)
    sys.exit(int(module.run(parser.parse_args()) or 0))
