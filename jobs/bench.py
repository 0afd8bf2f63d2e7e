"""Run every benchmark module and write a Markdown table of their figures."""

from __future__ import annotations

import argparse
import json
import pkgutil
import platform
import subprocess
import sys
import time
from pathlib import Path

from jobs.common import setup_logging


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench_out", help="folder for the JSON results and BENCHMARKS.md")
    p.add_argument("--only", nargs="+", help="benchmark module names to run (default: all)")


def _flatten(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def markdown(results: dict[str, dict], machine: str) -> str:
    lines = [f"Machine: {machine}", "", "| benchmark | figure | value |", "| --- | --- | --- |"]
    for name, res in results.items():
        for k, v in _flatten(res).items():
            lines.append(f"| {name} | {k} | {v:.4g} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    setup_logging()
    import benchmarks

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only or sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))
    results: dict[str, dict] = {}
    failed = []
    for name in names:
        path = out / f"{name}.json"
        t = time.perf_counter()
        print(f"benchmark {name} ...", flush=True)
        r = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--json", str(path)])
        if r.returncode or not path.exists():
            failed.append(name)
            continue
        results[name] = json.loads(path.read_text())
        print(f"benchmark {name}: {time.perf_counter() - t:.0f} s", flush=True)
    machine = f"{platform.platform()}, {__import__('os').cpu_count()} CPUs"
    (out / "BENCHMARKS.md").write_text(markdown(results, machine))
    print(f"wrote {out / 'BENCHMARKS.md'}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    from jobs._entry import run_module

    run_module(sys.modules[__name__])
