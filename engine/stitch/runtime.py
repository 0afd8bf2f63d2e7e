"""Ray connection for stitching jobs: join a running cluster or start a small local one."""

from __future__ import annotations

import os


def ensure_ray(num_cpus: int = 2) -> None:
    """Connect to ``RAY_ADDRESS`` if set, else start an embedded local Ray with ``num_cpus``.

    The embedded instance listens on this machine only and runs without token auth
    (``RAY_AUTH_MODE=disabled`` unless set), so it never writes ``~/.ray/auth_token``.
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
