"""``make lint`` (ruff, mypy, the layering rules; ``make test`` runs it before pytest) fails on a
planted violation: run on a small tree with this repository's Makefile and pyproject.toml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent

CLEAN = {
    "engine/__init__.py": "",
    "engine/grid.py": '"""Cells."""\n\n\ndef cells(n: int) -> list[int]:\n    return list(range(n))\n',
    "schemas/__init__.py": "",
    "schemas/tables.py": '"""Tables."""\n\nCOLUMNS: tuple[str, ...] = ("a", "b")\n',
    "jobs/__init__.py": "",
    "jobs/count.py": '"""A job."""\n\nfrom engine.grid import cells\n\n\ndef run() -> int:\n    return len(cells(3))\n',
}


def _tree(tmp: Path, planted: dict[str, str]) -> Path:
    for name in (
        "Makefile",
        "pyproject.toml",
        "tests/__init__.py",
        "tests/house/__init__.py",
        "tests/house/layering.py",
    ):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp / name)
    for name, text in {**CLEAN, **planted}.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
    return tmp


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory) -> Path:
    """One mypy cache for these runs: the standard library is analysed once."""
    return tmp_path_factory.mktemp("mypy_cache")


def _lint(tree: Path, cache: Path) -> subprocess.CompletedProcess:
    # -o venv: use this interpreter's environment as it is (no install step)
    return subprocess.run(
        ["make", "-o", "venv", "lint", f"VENV={VENV}", f"PY={sys.executable}"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MYPY_CACHE_DIR": str(cache)},
    )


def test_lint_passes_a_clean_tree(tmp_path, mypy_cache):
    run = _lint(_tree(tmp_path, {}), mypy_cache)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    "planted, expected",
    [
        (
            {
                "engine/grid.py": '"""Cells."""\n\nimport os\n\n\n'
                "def cells(n: int) -> list[int]:\n    return list(range(n))\n"
            },
            "F401",
        ),
        (
            {"engine/grid.py": '"""Cells."""\n\n\ndef cells(n: int) -> list[int]:\n    return "abc"\n'},
            'Incompatible return value type (got "str", expected "list[int]")',
        ),
        (
            {
                "engine/late.py": '"""Reaches up."""\n\n\ndef total() -> int:\n'
                "    from jobs.count import run\n\n    return run()\n"
            },
            "engine/late.py:5: engine.late imports jobs.count (engine must not import jobs)",
        ),
    ],
    ids=["ruff-unused-import", "mypy-type-error", "layering-engine-imports-jobs"],
)
def test_lint_fails_on_a_planted_violation(tmp_path, mypy_cache, planted, expected):
    run = _lint(_tree(tmp_path, planted), mypy_cache)
    assert run.returncode != 0
    assert expected in run.stdout + run.stderr
