"""The raster runner: a toy 3×3 box filter as a block stage, against scipy over the whole raster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage

from engine.errors import LodeInputError
from engine.io.manifest import RunManifest
from engine.raster import BlockStage, Unit, blend_weights, block_grid, units_of
from engine.raster.runner import RunOptions, run_stage, wants_gpu

BLOCK = (32, 48)
ROOT = str(Path(__file__).resolve().parents[2])


class BoxFilter(BlockStage):
    """3×3 mean with a one-pixel halo (edges replicated), written to ``out`` block by block."""

    name = "box"

    def __init__(self, src: str, out: str, model: bool = False):
        self.src, self.out = src, out
        self.model = model  # type: ignore[misc]

    def read(self, unit: Unit) -> dict:
        arr = zarr.open_array(f"{self.src}/{unit.raster}", mode="r")
        if unit.raster == "broken":
            raise LodeInputError(f"{self.src}/{unit.raster}", "unreadable")
        y0, y1, x0, x1 = unit.block.halo(1, *arr.shape)
        return {"region": np.asarray(arr[y0:y1, x0:x1]), "origin": np.array([y0, x0]), "read_pid": os.getpid()}

    def setup(self, device: str) -> None:
        self.device = device

    def compute(self, unit: Unit, data: dict) -> dict:
        region = np.asarray(data["region"], np.float64)
        b, (y0, x0) = unit.block, data["origin"]
        # Edge replication of the whole raster: pad only where the halo was cut by the raster edge.
        arr_shape = zarr.open_array(f"{self.src}/{unit.raster}", mode="r").shape
        pad = ((int(b.y0 == 0), int(b.y0 + b.h == arr_shape[0])), (int(b.x0 == 0), int(b.x0 + b.w == arr_shape[1])))
        full = np.pad(region, pad, mode="edge")
        mean = ndimage.uniform_filter(full, 3, mode="nearest")
        oy, ox = b.y0 - int(y0) + pad[0][0], b.x0 - int(x0) + pad[1][0]
        import ray

        gpus = len(ray.get_gpu_ids()) if ray.is_initialized() else 0
        return {
            "mean": mean[oy : oy + b.h, ox : ox + b.w].astype(np.float32),
            "device": self.device,
            "gpus": gpus,
            "read_here": int(data["read_pid"]) == os.getpid(),
            "compute_pid": os.getpid(),
        }

    def write(self, unit: Unit, result: dict) -> dict:
        b = unit.block
        zarr.open_array(f"{self.out}/{unit.raster}", mode="r+")[b.y0 : b.y0 + b.h, b.x0 : b.x0 + b.w] = result["mean"]
        Path(f"{self.out}.{unit.raster}.{b.key}.json").write_text(
            json.dumps(
                {
                    "device": str(result["device"]),
                    "gpus": int(result["gpus"]),
                    "read_here": bool(result["read_here"]),
                    "written_here": int(result["compute_pid"]) == os.getpid(),
                }
            )
        )
        return {"windows": 1}


def _rasters(tmp_path: Path, names=("a", "b")) -> tuple[str, str, dict[str, np.ndarray]]:
    src, out = str(tmp_path / "src.zarr"), str(tmp_path / "out.zarr")
    rng = np.random.default_rng(3)
    data = {}
    for k, n in enumerate(names):
        shape = (70 + 9 * k, 101 - 13 * k)
        data[n] = rng.normal(size=shape).astype(np.float32)
        zarr.save_array(f"{src}/{n}", data[n])
        zarr.create_array(f"{out}/{n}", shape=shape, chunks=BLOCK, dtype="float32", fill_value=np.nan)
    return src, out, data


def _units(data: dict[str, np.ndarray]) -> list[Unit]:
    return [u for n, a in data.items() for u in units_of(n, block_grid(*a.shape, BLOCK))]


def _result(out: str, name: str) -> np.ndarray:
    return zarr.open_array(f"{out}/{name}", mode="r")[:]


def _truth(a: np.ndarray) -> np.ndarray:
    return ndimage.uniform_filter(a.astype(np.float64), 3, mode="nearest").astype(np.float32)


def test_serial_blocked_equals_whole_raster_and_resumes(tmp_path):
    src, out, data = _rasters(tmp_path)
    manifest = RunManifest(tmp_path / "run")
    units = _units(data)
    first = run_stage(BoxFilter(src, out), units, manifest, RunOptions(executor="serial", max_units=3))
    assert first.ran == 3 and np.isnan(_result(out, "a")).any()
    second = run_stage(BoxFilter(src, out), units, manifest, RunOptions(executor="serial"))
    assert second.skipped == 3 and second.ran == len(units) - 3
    for n, a in data.items():
        np.testing.assert_allclose(_result(out, n), _truth(a), atol=1e-6)
    assert {u.key for u in units} == manifest.done_keys()


def test_serial_without_manifest_raises_naming_the_input(tmp_path):
    src, out, data = _rasters(tmp_path, ("broken",))
    with pytest.raises(LodeInputError, match="broken"):
        run_stage(BoxFilter(src, out), _units(data), None, RunOptions(executor="serial"))


@pytest.mark.parametrize(
    "model, reads",
    [(False, False), (False, True), (True, False), (True, True)],
    ids=["tasks", "tasks-read", "actors", "actors-read"],
)
def test_ray_runner_equals_whole_raster_and_a_broken_raster_fails_alone(tmp_path, ray_session, model, reads):
    src, out, data = _rasters(tmp_path, ("a", "broken", "b"))
    manifest = RunManifest(tmp_path / "run")
    units = _units(data)
    run = run_stage(BoxFilter(src, out, model), units, manifest, RunOptions(read_in_compute=reads))
    assert run.device == "cpu" and run.actors == (1 if model else 0)
    records = [json.loads(p.read_text()) for p in tmp_path.glob("out.zarr.*.json")]
    if model:  # a CPU actor reads (and writes) its units itself only when asked to; else tasks do
        assert records and {r["read_here"] for r in records} == {reads}
        assert {r["written_here"] for r in records} == {reads}
    elif reads:  # (without, a read task may by chance run in the worker process that computes)
        assert records and all(r["read_here"] for r in records)
    for n in ("a", "b"):
        np.testing.assert_allclose(_result(out, n), _truth(data[n]), atol=1e-6)
    broken = {u.key for u in units if u.raster == "broken"}
    assert set(run.failed) == broken and all("unreadable" in r for r in run.failed.values())
    assert manifest.done_keys() == {u.key for u in units} - broken


@pytest.mark.parametrize("model, held", [(False, 1.5), (True, 1.0)], ids=["tasks", "actors"])
def test_a_stage_that_reads_in_compute_runs_while_another_holds_the_other_cpus(tmp_path, ray_session, model, held):
    """Another stage's work (an export, a render task) holds all but what this stage's compute and
    writes ask for: its read tasks, fused into the compute, wait for no CPU of their own (a read task
    of a whole CPU, as Ray Data's default, would wait until that work ends)."""
    import threading

    import ray

    src, out, data = _rasters(tmp_path, ("a",))
    holder = ray.remote(num_cpus=held)(_Holder).remote()
    ray.get(holder.ping.remote())
    done: dict = {}
    try:
        worker = threading.Thread(
            target=lambda: done.update(
                run=run_stage(
                    BoxFilter(src, out, model),
                    _units(data),
                    RunManifest(tmp_path / "run"),
                    RunOptions(read_in_compute=True),
                )
            ),
            daemon=True,
        )
        worker.start()
        worker.join(120)
        assert "run" in done, f"the stage waited for a CPU while {held} of 2 were held"
    finally:
        ray.kill(holder)
        worker.join(120)
    np.testing.assert_allclose(_result(out, "a"), _truth(data["a"]), atol=1e-6)
    assert done["run"].ran == len(_units(data)) and not done["run"].failed


class _Slow(BoxFilter):
    """The box filter, its compute taking 0.4 s and recording when and where it ran."""

    def compute(self, unit: Unit, data: dict) -> dict:
        import threading
        import time

        t0 = time.time()
        time.sleep(0.4)
        out = super().compute(unit, data)
        Path(f"{self.out}.{unit.raster}.{unit.block.key}.span").write_text(
            json.dumps([t0, time.time(), os.getpid(), threading.get_ident()])
        )
        return out


@pytest.mark.parametrize("threads", [1, 2])
def test_a_cpu_actor_computes_units_side_by_side_in_its_threads(tmp_path, ray_session, threads):
    src, out, data = _rasters(tmp_path, ("a",))
    options = RunOptions(read_in_compute=True, actors=1, actor_cpus=1.0, compute_threads=threads)
    run = run_stage(_Slow(src, out, model=True), _units(data), RunManifest(tmp_path / "run"), options)
    assert run.ran == len(_units(data)) == 9 and not run.failed
    np.testing.assert_allclose(_result(out, "a"), _truth(data["a"]), atol=1e-6)
    spans = sorted(json.loads(p.read_text()) for p in tmp_path.glob("out.zarr.a.*.span"))
    assert len({s[2] for s in spans}) == 1 and len({s[3] for s in spans}) == threads  # one process
    overlaps = sum(b[0] < a[1] - 0.05 for a, b in zip(spans, spans[1:]))
    assert (overlaps >= 3) if threads == 2 else (overlaps == 0)


class _Holder:
    def ping(self) -> int:
        return 1


def test_blend_kernels():
    g = blend_weights(64)
    assert g.shape == (64, 64) and g.dtype == np.float32
    assert (
        np.allclose(g, g.T)
        and g.min() >= 1e-3
        and np.unravel_index(g.argmax(), g.shape) in {(31, 31), (32, 32), (31, 32), (32, 31)}
    )
    s = blend_weights(16, "sin2")
    tiled = np.zeros(48)
    for o in range(0, 33, 8):
        tiled[o : o + 16] += np.sqrt(np.diag(s))  # the separable kernel's 1-D factor
    np.testing.assert_allclose(tiled[16:32], 1.0, atol=1e-6)  # half-stride sin² sums to one
    assert (blend_weights(8, "flat") == 1).all()
    with pytest.raises(ValueError, match="unknown blend"):
        blend_weights(8, "cosine")  # type: ignore[arg-type]


def test_gaussian_is_monai_importance_map():
    import torch
    from monai.data.utils import compute_importance_map

    for window in (64, 128, 129):
        ref = compute_importance_map((window, window), mode="gaussian", sigma_scale=0.125, device="cpu").numpy()
        np.testing.assert_allclose(blend_weights(window), ref, rtol=1e-6, atol=1e-9)
    assert torch.get_default_dtype() == torch.float32


def test_device_is_chosen_from_cluster_resources_not_the_driver(tmp_path):
    """A fake GPU in the cluster: model actors ask for it, and each picks its device in its own
    process (the CPU here, where torch sees no CUDA)."""
    import torch

    script = textwrap.dedent("""
        import json, sys
        from pathlib import Path
        import ray
        from tests.raster.test_runner import BoxFilter, _rasters, _units
        from engine.io.manifest import RunManifest
        from engine.raster.runner import RunOptions, run_stage, wants_gpu
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
        tmp = Path(sys.argv[1])
        src, out, data = _rasters(tmp, ("a",))
        stage = BoxFilter(src, out, model=True)
        run = run_stage(stage, _units(data), RunManifest(tmp / "run"), RunOptions(read_in_compute=True))
        seen = [json.loads(p.read_text()) for p in sorted(tmp.glob("out.zarr.a.*.json"))]
        print(json.dumps({"wants": wants_gpu(stage, "auto"), "run_device": run.device, "actors": seen}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": ROOT},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["wants"] is True and found["run_device"] == "cuda"
    # Each actor was given the cluster's GPU and picked its device itself: no CUDA in its process.
    # With GPUs, reads run ahead in tasks even where CPU actors would read their own units.
    local = "cuda" if torch.cuda.is_available() else "cpu"
    assert found["actors"] and all(
        a == {"device": local, "gpus": 1, "read_here": False, "written_here": False} for a in found["actors"]
    )


def test_a_driver_with_cuda_does_not_ask_a_gpu_less_cluster_for_gpus(tmp_path, ray_session, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    src, out, data = _rasters(tmp_path, ("a",))
    stage = BoxFilter(src, out, model=True)
    run = run_stage(stage, _units(data), RunManifest(tmp_path / "run"), RunOptions())
    assert wants_gpu(stage, "auto") is False and run.device == "cpu"
    seen = [json.loads(p.read_text()) for p in tmp_path.glob("out.zarr.a.*.json")]
    assert seen and all(a == {"device": "cpu", "gpus": 0, "read_here": False, "written_here": False} for a in seen)


def test_cuda_on_a_cluster_without_gpus_is_refused(ray_session):
    with pytest.raises(LodeInputError, match="no GPU"):
        wants_gpu(BoxFilter("x", "y", model=True), "cuda")
    assert wants_gpu(BoxFilter("x", "y", model=False), "cuda") is False


class _BrokenModel(BoxFilter):
    def setup(self, device: str) -> None:
        raise LodeInputError("weights.pt", "\x1b[31mtruncated\x1b[0m weights")


def test_an_input_error_raised_in_an_actor_reaches_the_driver_unwrapped(tmp_path, ray_session):
    from engine.errors import input_error_of, strip_ansi

    src, out, data = _rasters(tmp_path, ("a",))
    manifest = RunManifest(tmp_path / "run")
    manifest.begin("box", {}, {})
    with pytest.raises(Exception) as info:
        run_stage(_BrokenModel(src, out, model=True), _units(data), manifest, RunOptions())
    cause = input_error_of(info.value)
    assert cause is not None and cause.source == "weights.pt"
    assert strip_ansi(str(cause)) == "weights.pt: truncated weights"
    manifest.abort(info.value)
    doc = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert doc["status"] == "failed" and doc["error"] == "weights.pt: truncated weights"
