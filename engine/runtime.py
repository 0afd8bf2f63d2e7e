"""Connecting to Ray: an existing cluster (``ray job submit``, RAY_ADDRESS) or an embedded local one."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("lode")


def init_ray(num_cpus: int | None = None, object_store_mb: int | None = None) -> None:
    """Connect to the cluster named by RAY_ADDRESS (``ray job submit`` sets it), or start an
    embedded local Ray on this machine without token auth (it never writes ``~/.ray/auth_token``).

    Workers' output stays in Ray's session logs (``LODE_RAY_LOGS=1`` streams it here): an error
    raised in a worker reaches the user once, as the job's one-line message."""
    import warnings

    import ray

    # Ray Data's own default options trip its deprecation of exclude_resources (Ray 2.60).
    warnings.filterwarnings("ignore", message=r".*exclude_resources.* is deprecated")
    if ray.is_initialized():
        return
    stream = os.environ.get("LODE_RAY_LOGS", "") not in ("", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=stream)
        return
    kwargs: dict = {"include_dashboard": False, "log_to_driver": stream, "configure_logging": False}
    kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    if object_store_mb:
        kwargs["object_store_memory"] = object_store_mb * 1024 * 1024
    ray.init(**kwargs)


def has_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
