"""Start and stop a private Ray head node for tests (own temp dir and ports; stops only itself)."""

from __future__ import annotations

import json
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


def _node_ports() -> list[int]:
    """Ten free ports for one node; the last opens a free range of 200 worker ports."""
    while True:
        ports = free_ports(10)
        wmin = ports[-1]
        if wmin + 200 < 65535 and not any(wmin <= p <= wmin + 200 for p in ports[:-1]):
            return ports


def _start_node(tmp: str, num_cpus: int, head_gcs: int | None) -> tuple[int, int]:
    """``ray start`` one node under ``tmp`` on its own ports: the head (``head_gcs`` None) or a worker
    node joining the head's GCS port. The head's GCS and dashboard ports."""
    port, dash, nm, om, client, agent, agent_grpc, metrics, rte, wmin = _node_ports()
    role = (
        ["--head", f"--port={port}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1"]
        + ["--include-dashboard=true", f"--ray-client-server-port={client}"]
        if head_gcs is None
        else [f"--address=127.0.0.1:{head_gcs}"]
    )
    cmd = [
        RAY,
        "start",
        *role,
        f"--temp-dir={tmp}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        f"--node-manager-port={nm}",
        f"--object-manager-port={om}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={rte}",
        f"--min-worker-port={wmin}",
        f"--max-worker-port={wmin + 200}",
        "--disable-usage-stats",
        "--object-store-memory=500000000",
    ]
    r = subprocess.run(cmd, env=cluster_env(), capture_output=True, text=True, timeout=180)
    if r.returncode:
        raise RuntimeError(f"ray start failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return port, dash


@contextmanager
def local_cluster(num_cpus: int = 2, workers: int = 0, worker_cpus: int = 1) -> Iterator[tuple[str, str]]:
    """Yield the dashboard address (http://127.0.0.1:PORT) and the GCS address (127.0.0.1:PORT) of a
    fresh head node and ``workers`` worker nodes, all under one temp dir of their own; stops only them."""
    tmp = tempfile.mkdtemp(prefix="lr", dir="/tmp")
    try:
        gcs, dash = _start_node(tmp, num_cpus, None)
        for _ in range(workers):
            _start_node(tmp, worker_cpus, gcs)
        address = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 90
        while time.time() < deadline:
            jobs = subprocess.run([RAY, "job", "list", "--address", address], env=cluster_env(), capture_output=True)
            if jobs.returncode == 0 and _alive_nodes(address) == 1 + workers:
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"the local cluster under {tmp} did not come up with {1 + workers} node(s)")
        yield address, f"127.0.0.1:{gcs}"
    finally:
        _kill_tree_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _alive_nodes(address: str) -> int:
    """The alive nodes the dashboard at ``address`` knows (0 while it does not answer)."""
    r = subprocess.run(
        [RAY, "list", "nodes", "--address", address, "--format", "json", "--filter", "state=ALIVE"],
        env=cluster_env(),
        capture_output=True,
        text=True,
    )
    return len(json.loads(r.stdout)) if r.returncode == 0 else 0


@contextmanager
def local_head(num_cpus: int = 2) -> Iterator[str]:
    """Yield the dashboard address (http://127.0.0.1:PORT) of a fresh head node."""
    with local_cluster(num_cpus) as (address, _):
        yield address


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


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL a job started with ``start_new_session=True`` and every process of the session it leads
    (its embedded Ray), and wait until they are gone: a worker outside the job's process group could
    otherwise still record a unit after the caller has read what was done."""
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == proc.pid:
                p.kill()
                killed.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    psutil.wait_procs(killed, timeout=30)
