"""Connecting to Ray: an existing cluster (``ray job submit``, RAY_ADDRESS) or an embedded local one."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("lode")


def init_ray(num_cpus: int | None = None, object_store_mb: int | None = None) -> None:
    """Connect to the cluster named by RAY_ADDRESS (``ray job submit`` sets it), or start an
    embedded local Ray on this machine without token auth (it never writes ``~/.ray/auth_token``)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    kwargs: dict = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
    kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    if object_store_mb:
        kwargs["object_store_memory"] = object_store_mb * 1024 * 1024
    ray.init(**kwargs)


def has_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
