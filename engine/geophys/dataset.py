"""Zarr training sets of synthetic surveys, generated as parallel Ray tasks.

Layout of a set (zarr v3 group): ``anomaly`` (N, H, W) float32 nT, ``target`` (N, H, W) uint8
axis band, ``inclination`` / ``declination`` (N,) float32; group attributes hold the survey
config and seed. One chunk per example, so tasks never share a chunk.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from engine.geophys.synth import SurveyConfig, make_survey
from engine.io.atomic import atomic_path
from engine.io.layout import array_at


def example_seed(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), int(index)])


def _write_examples(path: str, config: SurveyConfig, seed: int, indices: list[int]) -> int:
    import zarr

    group = zarr.open_group(path, mode="r+")
    for i in indices:
        s = make_survey(example_seed(seed, i), config)
        array_at(group, "anomaly")[i] = s.anomaly
        array_at(group, "target")[i] = s.target
        array_at(group, "inclination")[i] = s.inclination
        array_at(group, "declination")[i] = s.declination
    return len(indices)


def generate_training_set(
    out: str | Path,
    n: int = 500,
    config: SurveyConfig = SurveyConfig(),
    seed: int = 0,
    num_tasks: int | None = None,
) -> Path:
    """Generate ``n`` synthetic surveys into a zarr training set at ``out`` with Ray tasks.

    Written to a temporary sibling and renamed into place when every task has finished.
    Starts a local Ray cluster if none is connected.
    """
    import ray
    import zarr

    from engine.runtime import init_ray

    out = Path(out)
    with atomic_path(out) as tmp:
        h, w = config.shape
        group = zarr.open_group(str(tmp), mode="w")
        group.attrs.update(
            {
                "config": dataclasses.asdict(config),
                "seed": int(seed),
                "n": int(n),
                "kind": "lode-lineament-training-set",
            }
        )
        group.create_array("anomaly", shape=(n, h, w), chunks=(1, h, w), dtype="float32")
        group.create_array("target", shape=(n, h, w), chunks=(1, h, w), dtype="uint8")
        group.create_array("inclination", shape=(n,), chunks=(1,), dtype="float32")
        group.create_array("declination", shape=(n,), chunks=(1,), dtype="float32")
        init_ray()
        num_tasks = num_tasks or max(1, min(n, int(ray.cluster_resources().get("CPU", 1)) * 4))
        task = ray.remote(num_cpus=1)(_write_examples)
        parts = [list(map(int, p)) for p in np.array_split(np.arange(n), num_tasks) if len(p)]
        done = sum(ray.get([task.remote(str(tmp), config, seed, p) for p in parts]))
        if done != n:
            raise RuntimeError(f"wrote {done} of {n} examples")
    return out


def write_survey_files(
    out: Path,
    n: int,
    size: int = 1024,
    spacing: float = 50.0,
    noise: float = 0.5,
    seed: int = 100000,
    inclination_range: tuple[float, float] = (30.0, 90.0),
) -> list[Path]:
    """Held-out style surveys (northern field, inclination in ``inclination_range``, plain integer seeds
    ``seed + i``): ``survey_NNN.nc`` grids with field angles in their attributes and
    ``survey_NNN_truth.geojson`` axes."""
    from engine.geophys.grid import write_grid
    from engine.geophys.lineaments import write_lines
    from engine.geophys.vectorize import Lineament, axial_azimuth

    out.mkdir(parents=True, exist_ok=True)
    cfg = SurveyConfig(
        shape=(size, size),
        spacing_m=spacing,
        noise_nt=noise,
        inclination_range=inclination_range,
        southern_fraction=0.0,
    )
    paths = []
    for i in range(n):
        s = make_survey(seed + i, cfg)
        grid = write_grid(s.to_dataarray(), out / f"survey_{i:03d}.nc")
        truth = [Lineament(ln, ln.length, axial_azimuth(ln)) for ln in s.axes_lines()]
        write_lines(
            truth,
            out / f"survey_{i:03d}_truth.geojson",
            None,
            {"cell_size": spacing, "seed": seed + i, "inclination": s.inclination, "declination": s.declination},
        )
        paths.append(grid)
    return paths
