"""How many Ray Train workers, on which device: one place for every network Lode trains.

GPUs are asked for when the user says so or, by default, when the connected cluster has them
(``ray.cluster_resources()``), never from the driver's own devices: a cluster whose head has no
GPU still trains on its GPU workers. Each worker then uses the device Ray gave it
(``ray.train.torch.get_device()``)."""

from __future__ import annotations

from typing import Any


def cluster_has_gpu() -> bool:
    """Whether the connected Ray cluster has a GPU (call with Ray initialised)."""
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def scaling_config(workers: int = 1, gpu: bool | None = None, cpus_per_worker: float | None = None) -> Any:
    """A ``ray.train.ScalingConfig`` of ``workers`` workers; ``gpu=None`` decides from the cluster's
    resources. CPU workers reserve ``cpus_per_worker`` CPUs (Ray Train's default when ``None``)."""
    from ray.train import ScalingConfig

    use_gpu = cluster_has_gpu() if gpu is None else gpu
    resources = None if use_gpu or cpus_per_worker is None else {"CPU": cpus_per_worker}
    return ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources)
