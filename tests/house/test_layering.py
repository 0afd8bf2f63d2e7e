"""The layering rules of ``tests.house.layering`` hold for the code base, and each one catches a planted break."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.house.layering import violations

ROOT = Path(__file__).resolve().parents[2]


def test_code_base_keeps_the_layering():
    assert violations(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for pkg in {p.parent for p in tmp_path.rglob("*.py")}:
        (pkg / "__init__.py").touch()
    return tmp_path


CLEAN = {
    "engine/errors.py": "",
    "engine/segment/card.py": "from engine.errors import X\n",
    "engine/segment/checkpoint.py": "from engine.segment.card import Y\n",
    "engine/calibrate/colour.py": "import engine.errors\n",
    "engine/analyze/grains.py": "from schemas.tables import GRAINS\n",
    "schemas/tables.py": "",
    "schemas/config.py": "from engine.errors import X\n",
    "jobs/segment.py": "from engine.segment import checkpoint\nfrom schemas.config import C\n",
    "jobs/bench.py": "import benchmarks.colour\n",
    "benchmarks/colour.py": "from engine.calibrate.colour import fit\n",
}


def test_clean_tree_passes(tmp_path):
    assert violations(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    "path, text, expected",
    [
        (
            "engine/io/y.py",
            "def f():\n    from jobs.bench import run\n",
            "engine/io/y.py:2: engine.io.y imports jobs.bench (engine must not import jobs)",
        ),
        (
            "engine/train/loop.py",
            "from schemas.config import TrainConfig\n",
            "engine/train/loop.py:1: engine.train.loop imports schemas.config (engine must not import schemas.config)",
        ),
        (
            "engine/io/x.py",
            "from benchmarks import colour\n",
            "engine/io/x.py:1: engine.io.x imports benchmarks.colour (engine must not import benchmarks)",
        ),
        (
            "engine/calibrate/lens.py",
            "from ..segment.checkpoint import Y\n",
            "package import cycle engine.calibrate -> engine.segment -> engine.calibrate: engine.calibrate -> "
            "engine.segment (engine/calibrate/lens.py:1), engine.segment -> engine.calibrate "
            "(engine/segment/extra.py:1)",
        ),
        (
            "engine/segment/card.py",
            "from engine.errors import X\nfrom engine.segment.checkpoint import read_blob\n",
            "module import cycle engine.segment.card -> engine.segment.checkpoint -> engine.segment.card: "
            "engine.segment.card -> engine.segment.checkpoint (engine/segment/card.py:2), "
            "engine.segment.checkpoint -> engine.segment.card (engine/segment/checkpoint.py:1)",
        ),
    ],
)
def test_each_rule_catches_a_planted_break(tmp_path, path, text, expected):
    files = {**CLEAN, path: text, "engine/segment/extra.py": "import engine.calibrate.colour\n"}
    assert violations(_tree(tmp_path, files)) == [expected]


def test_benchmarks_importing_jobs_is_also_a_package_cycle(tmp_path):
    found = violations(_tree(tmp_path, {**CLEAN, "benchmarks/stitch.py": "import jobs.segment\n"}))
    assert found == [
        "benchmarks/stitch.py:1: benchmarks.stitch imports jobs.segment (benchmarks must not import jobs)",
        "package import cycle benchmarks -> jobs -> benchmarks: benchmarks -> jobs "
        "(benchmarks/stitch.py:1), jobs -> benchmarks (jobs/bench.py:1)",
    ]
