"""Every trainer asks for GPUs from the cluster's resources, never from the driver's devices."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.train.scaling import scaling_config

pytestmark = pytest.mark.ray

ROOT = str(Path(__file__).resolve().parents[2])


def test_a_cluster_with_a_fake_gpu_gets_gpu_workers_whatever_the_driver_sees(tmp_path):
    """On a cluster with a (fake) GPU and a driver that sees none, :func:`scaling_config` asks for
    GPU workers, and so do the lineament and prospect ``train`` entry points (stopped as their
    trainer is built), for the asked number of workers; with ``gpu=False`` none is asked for."""
    script = textwrap.dedent(f"""
        import json
        import ray
        import ray.train.torch
        import torch
        torch.cuda.is_available = lambda: False
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
        from engine.geophys.train import TrainConfig, train as train_lineaments
        from engine.prospect.stack import build_stack
        from engine.prospect.synth import synth_region, write_region
        from engine.prospect.train import train as train_prospect

        class Built(Exception):
            pass

        asked = []

        class Recorder:
            def __init__(self, *args, scaling_config, **kwargs):
                asked.append([scaling_config.use_gpu, scaling_config.num_workers])
                raise Built

        ray.train.torch.TorchTrainer = Recorder
        tmp = {str(tmp_path)!r}
        stack = build_stack(write_region(synth_region(96, seed=1), tmp + "/r") / "layers.json", tmp + "/s.zarr")
        runs = [
            lambda: train_lineaments(TrainConfig(data=tmp + "/set.zarr", out=tmp + "/l", batch_size=4, workers=2)),
            lambda: train_lineaments(TrainConfig(data=tmp + "/set.zarr", out=tmp + "/l", workers=1, gpu=False)),
            lambda: train_prospect(stack, tmp + "/m.pt", batch=8, workers=2),
            lambda: train_prospect(stack, tmp + "/m.pt", workers=1, gpu=False),
        ]
        for run in runs:
            try:
                run()
            except Built:
                pass
        from engine.train.scaling import scaling_config
        auto, cpu = scaling_config(1), scaling_config(2, gpu=False, cpus_per_worker=0.5)
        found = {{"auto": [auto.use_gpu, auto.num_workers], "cpu": [cpu.use_gpu, cpu._resources_per_worker_not_none]}}
        print(json.dumps({{**found, "asked": asked}}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": ROOT},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["auto"] == [True, 1]
    assert found["cpu"] == [False, {"CPU": 0.5}]
    assert found["asked"] == [[True, 2], [False, 1], [True, 2], [False, 1]]


def test_a_driver_with_cuda_does_not_ask_a_gpu_less_cluster_for_gpus(ray_session, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = scaling_config(2, cpus_per_worker=0.5)
    assert cfg.use_gpu is False and cfg.num_workers == 2
    assert cfg._resources_per_worker_not_none == {"CPU": 0.5}


@pytest.mark.parametrize("module", ["engine.geophys.train", "engine.prospect.train", "engine.train.loop"])
def test_trainers_run_through_the_one_fit_helper(module):
    """No trainer builds its own ``TorchTrainer`` or decides ``use_gpu`` (the driver's
    ``torch.cuda.is_available()`` was the bug): they call :func:`engine.train.fit.fit`, which asks
    :func:`scaling_config`."""
    import importlib
    import inspect

    from engine.train import fit

    src = inspect.getsource(importlib.import_module(module))
    assert " fit(" in src and "TorchTrainer" not in src and "ScalingConfig(" not in src and "use_gpu" not in src
    assert "scaling_config(" in inspect.getsource(fit)
