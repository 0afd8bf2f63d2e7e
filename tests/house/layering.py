"""The layering rules of the code base, checked on the import statements of its source files.

- ``engine`` never imports ``jobs`` or ``benchmarks``, nor the job configs of ``schemas.config``
  (engine functions take their own option types; the data contracts ``schemas.tables`` and
  ``schemas.stack`` are fine);
- ``schemas`` never imports ``jobs`` or ``benchmarks``; ``benchmarks`` never imports ``jobs``;
- no import cycle between packages: ``jobs``, ``benchmarks``, and each subpackage or top-level
  module of ``engine`` and ``schemas`` (``engine.segment``, ``engine.errors``, ``schemas.config``);
- no import cycle between modules.

Every import statement counts, also one inside a function or under ``TYPE_CHECKING``: a lazy
import is still a dependency. ``python -m tests.house.layering [ROOT]`` prints each violation and
exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("engine", "jobs", "schemas", "benchmarks")
SPLIT = ("engine", "schemas")  # packages whose subpackages are layered against each other
FORBIDDEN = {
    "engine": ("jobs", "benchmarks", "schemas.config"),
    "schemas": ("jobs", "benchmarks"),
    "benchmarks": ("jobs",),
}


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    site: str  # path:line


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(root, p): p for pkg in PACKAGES if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py")}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(root: Path) -> list[Import]:
    """Every import of one of :data:`PACKAGES` by a module of them, resolved to the module it loads."""
    known = _modules(root)
    found = []
    for mod, path in known.items():
        here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            site = f"{path.relative_to(root)}:{node.lineno}"
            for t in targets:
                resolved = _resolve(t, known)
                if resolved and resolved != mod:
                    found.append(Import(mod, resolved, site))
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def unit(module: str) -> str:
    """The package a module belongs to for the package-cycle rule."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in SPLIT else parts[0]


def _cycles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """One shortest cycle through each strongly connected component of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = []
    for comp in comps:
        start = min(comp)
        prev: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in prev:
            nxt = []
            for v in frontier:
                for w in sorted(edges.get(v, {})):
                    if w in comp and w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append(path[::-1])
    return cycles


def _cycle_text(kind: str, cycle: list[str], edges: dict[str, dict[str, str]]) -> str:
    steps = ", ".join(f"{a} -> {b} ({edges[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))
    return f"{kind} import cycle {' -> '.join(cycle)}: {steps}"


def violations(root: Path) -> list[str]:
    """Each broken rule, one line naming the import(s) that break it."""
    found = imports(root)
    out = []
    for imp in found:
        for src, banned in FORBIDDEN.items():
            if _within(imp.source, src):
                out += [
                    f"{imp.site}: {imp.source} imports {imp.target} ({src} must not import {b})"
                    for b in banned
                    if _within(imp.target, b)
                ]
    for kind, key in (("package", unit), ("module", lambda m: m)):
        edges: dict[str, dict[str, str]] = defaultdict(dict)
        for imp in found:
            a, b = key(imp.source), key(imp.target)
            if a != b:
                edges[a].setdefault(b, imp.site)
        out += [_cycle_text(kind, c, edges) for c in _cycles(edges)]
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    problems = violations(Path(args[0] if args else ".").resolve())
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
