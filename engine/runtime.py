"""Connecting to Ray: an existing cluster (``ray job submit``, RAY_ADDRESS) or an embedded local one."""

from __future__ import annotations

import logging
import os
import sys

from engine.io import fs

log = logging.getLogger("lode")


def init_ray(num_cpus: int | None = None, object_store_mb: int | None = None) -> None:
    """Connect to the cluster named by RAY_ADDRESS (``ray job submit`` sets it), or start an
    embedded local Ray on this machine without token auth (it never writes ``~/.ray/auth_token``), which
    keeps no idle worker processes.

    Workers' output stays in Ray's session logs (``LODE_RAY_LOGS=1`` streams it here): an error
    raised in a worker reaches the user once, as the job's one-line message."""
    import warnings

    import ray

    _follow_stderr("ray")
    # Ray Data's own default options trip its deprecation of exclude_resources (Ray 2.60).
    warnings.filterwarnings("ignore", message=r".*exclude_resources.* is deprecated")
    if ray.is_initialized():
        return
    stream = os.environ.get("LODE_RAY_LOGS", "") not in ("", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=stream)
        return
    # Idle workers go after a second: Ray otherwise keeps one per CPU, each a few hundred MB that a
    # job's next stage (a torch actor, say) adds to rather than replaces.
    kwargs: dict = {
        "include_dashboard": False,
        "log_to_driver": stream,
        "configure_logging": False,
        "_system_config": {"num_workers_soft_limit": 0},
    }
    kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    if object_store_mb:
        kwargs["object_store_memory"] = object_store_mb * 1024 * 1024
    ray.init(**kwargs)
    fs.note_started_cluster(ray.get_runtime_context().get_node_id())
    _start_reaper()


class _Stderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _follow_stderr(prefix: str) -> None:
    """Point the console handlers of the ``prefix`` loggers (Ray's, bound to the ``sys.stderr`` of
    the moment Ray was imported) at the current ``sys.stderr``, so a stream replaced and closed
    since (a test's capture, a redirected console) never turns a log line into a traceback."""
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.split(".")[0] == prefix]
    for lg in loggers:
        for h in lg.handlers:
            if (
                isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)
                and (getattr(h.stream, "closed", False) or h.stream in (sys.stderr, sys.__stderr__))
            ):
                h.stream = _Stderr()


def _start_reaper() -> None:
    """Watch this process from a small child: when it dies, however (SIGKILL too), the Ray
    processes it started die with it (Ray's dashboard and runtime-env agents otherwise outlive a
    killed driver)."""
    import subprocess

    subprocess.Popen(
        [sys.executable, "-m", "engine.runtime", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def reap(driver: int, interval: float = 0.5) -> None:
    """Record the driver's descendants until the driver is gone, then kill those still alive."""
    import signal
    import time

    import psutil

    me = os.getpid()
    seen: dict[int, float] = {}
    try:
        proc = psutil.Process(driver)
        while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
            for c in proc.children(recursive=True):
                if c.pid != me:
                    try:
                        seen.setdefault(c.pid, c.create_time())
                    except psutil.Error:
                        pass
            time.sleep(interval)
    except psutil.Error:
        pass
    time.sleep(2 * interval)  # let a normal ray.shutdown() finish first
    for pid, created in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created:
                p.send_signal(signal.SIGKILL)
        except psutil.Error:
            continue


def has_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


if __name__ == "__main__":
    import sys

    reap(int(sys.argv[1]))
