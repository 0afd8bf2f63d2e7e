"""Start and stop a private Ray head node for tests (own temp dir and ports; stops only itself)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextmanager
def local_head(num_cpus: int = 2) -> Iterator[str]:
    """Yield the dashboard address (http://127.0.0.1:PORT) of a fresh head node."""
    tmp = tempfile.mkdtemp(prefix="lr", dir="/tmp")
    while True:
        gcs, dash, nm, om, client, agent, agent_grpc, metrics, rte, wmin = ports = free_ports(10)
        if wmin + 200 < 65535 and not any(wmin <= p <= wmin + 200 for p in ports[:-1]):
            break
    cmd = [
        RAY,
        "start",
        "--head",
        f"--port={gcs}",
        f"--dashboard-port={dash}",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        f"--temp-dir={tmp}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        f"--node-manager-port={nm}",
        f"--object-manager-port={om}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={rte}",
        f"--min-worker-port={wmin}",
        f"--max-worker-port={wmin + 200}",
        "--disable-usage-stats",
        "--object-store-memory=500000000",
    ]
    try:
        r = subprocess.run(cmd, env=cluster_env(), capture_output=True, text=True, timeout=180)
        if r.returncode:
            raise RuntimeError(f"ray start failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        address = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 60
        while time.time() < deadline:
            r = subprocess.run([RAY, "job", "list", "--address", address], env=cluster_env(), capture_output=True)
            if r.returncode == 0:
                break
            time.sleep(1)
        yield address
    finally:
        _kill_tree_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _kill_tree_under(tmp: str) -> None:
    victims = []
    me = os.getpid()
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != me and any(tmp in part for part in (p.info["cmdline"] or [])):
                victims.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in victims:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)
