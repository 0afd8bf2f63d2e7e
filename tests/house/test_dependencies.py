"""Declared dependencies match what the shipped packages import."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("engine", "jobs", "schemas")
# Declared but used without an import statement of their own, each with the reason.
INDIRECT = {
    "torchvision": "segmentation-models-pytorch's encoders import it",
    "dask": "xarray's lazy chunks (open_dataset/open_rasterio with chunks=...)",
    "h5netcdf": "xarray's netCDF engine, named as a string",
    "s3fs": "fsspec's s3:// protocol",
}


def _imports() -> set[str]:
    found = set()
    for pkg in SHIPPED:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in SHIPPED + ("benchmarks",)}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_canonical(re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0]) for d in deps}


def test_every_import_is_declared_and_every_declaration_is_used():
    dists = md.packages_distributions()
    imported = {_canonical(dists[m][0]) for m in _imports()}
    declared = _declared()
    assert imported - declared == set(), "imported but not declared in pyproject.toml"
    unused = declared - imported - {_canonical(k) for k in INDIRECT}
    assert unused == set(), "declared in pyproject.toml but never imported"
    assert {_canonical(k) for k in INDIRECT} <= declared


def test_declared_dependencies_are_in_the_lock():
    lock = {
        _canonical(line.split("==")[0])
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert _declared() - lock == set()
