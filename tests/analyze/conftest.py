"""Fixtures: a two-section segmentation store with exactly known grains."""

from __future__ import annotations

from pathlib import Path

import pytest

from .synthetic_sections import Truth, place_grains, write_store


@pytest.fixture(scope="session")
def two_sections(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Truth]]:
    """Two 384×512 sections of 5 ore minerals in 128-px blocks, 0.5 µm pixels."""
    codes = [1, 2, 5, 6, 8]
    a = place_grains((384, 512), codes, 60, seed=3)
    b = place_grains((384, 512), codes, 60, seed=4)
    store = write_store(tmp_path_factory.mktemp("store") / "seg.zarr", {"s1": a.labels, "s2": b.labels})
    return store, {"s1": a, "s2": b}
