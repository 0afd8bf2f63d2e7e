"""``engine.runtime``: the embedded local Ray a job starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_IDLE = """
import os, time
import psutil, ray
from engine.runtime import init_ray

init_ray(num_cpus=2)

@ray.remote(num_cpus=1)
def pid(wait):
    time.sleep(wait)
    return os.getpid()

pids = set(ray.get([pid.remote(1.0), pid.remote(1.0)]))
assert len(pids) == 2, pids
deadline = time.time() + 10
while time.time() < deadline and any(psutil.pid_exists(p) for p in pids):
    time.sleep(0.2)
left = [p for p in pids if psutil.pid_exists(p)]
assert not left, f"idle workers still running: {left}"
"""


def test_an_embedded_ray_lets_its_idle_workers_go():
    """Workers that ran a job's tasks exit once idle (Ray would keep one per CPU, a few hundred MB each)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _IDLE], env=env, cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
