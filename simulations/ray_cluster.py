"""A Ray cluster on this machine, started and stopped with Ray's own CLI (`ray start`).

`LocalRayCluster` starts a head node and optionally worker nodes, each as a
`ray start --block` process in its own session, on 127.0.0.1, with every port given
explicitly (from `ClusterPorts`, so that it never collides with another Ray on the
machine: no default port is used) and its own temporary directory. Leaving the
context stops exactly the processes it started (their process groups), never another
user's Ray (`ray stop` would stop every Ray of this user).

Used by `fedsilo sweep`, which runs every point of a grid on one Ray runtime, and by
the cluster test. A simulation reaches it as any other cluster: `--ray-address
127.0.0.1:PORT`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fedsilo.errors import ConfigError, FedsiloError

START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
PORTS_PER_NODE = 40  # 8 service ports + 32 worker ports


@dataclass(frozen=True)
class ClusterPorts:
    """The ports of one node, all in [base, base + 40): services first, then workers."""

    base: int

    def node_args(self, head: bool) -> list[str]:
        b = self.base
        args = [
            f"--node-manager-port={b + 2}",
            f"--object-manager-port={b + 3}",
            f"--dashboard-agent-grpc-port={b + 4}",
            f"--dashboard-agent-listen-port={b + 5}",
            f"--metrics-export-port={b + 6}",
            f"--runtime-env-agent-port={b + 7}",
            f"--min-worker-port={b + 8}",
            f"--max-worker-port={b + PORTS_PER_NODE - 1}",
        ]
        if head:
            args = [f"--port={b}", f"--ray-client-server-port={b + 1}", *args]
        return args

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.base}"


def free_port_block(size: int = PORTS_PER_NODE, low: int = 20000, high: int = 60000) -> int:
    """A base port whose `size` consecutive ports are free right now (best effort)."""
    for base in range(low + (os.getpid() * 97) % (high - low - size), high - size, size):
        if all(_free(port) for port in range(base, base + size)):
            return base
    raise FedsiloError("no free block of ports for a local Ray cluster: pass --ray-address of a running one")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ray_cli() -> str:
    local = Path(sys.executable).with_name("ray")
    found = str(local) if local.exists() else shutil.which("ray")
    if not found:
        raise ConfigError("Ray's command line `ray` is not installed next to this Python: pip install 'ray[default]'")
    return found


class LocalRayCluster:
    """A head (and `workers` worker nodes) with `cpus` CPUs each; see the module docstring."""

    def __init__(
        self,
        cpus: int | None = None,
        workers: int = 0,
        head_ports: ClusterPorts | None = None,
        worker_ports: list[ClusterPorts] | None = None,
        temp_dir: str | None = None,
    ) -> None:
        self.cpus = cpus
        self.head_ports = head_ports or ClusterPorts(free_port_block())
        self.worker_ports = worker_ports or []
        self.workers = workers
        self._own_temp = temp_dir is None
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="fsray-", dir="/tmp")  # short: Ray's socket paths
        self._processes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return self.head_ports.address

    def __enter__(self) -> LocalRayCluster:
        try:
            self._start(head=True, ports=self.head_ports)
            for i in range(self.workers):
                ports = (
                    self.worker_ports[i]
                    if i < len(self.worker_ports)
                    else ClusterPorts(free_port_block(low=self.head_ports.base + PORTS_PER_NODE * (i + 1)))
                )
                self._start(head=False, ports=ports)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self, head: bool, ports: ClusterPorts) -> None:
        command = [
            _ray_cli(),
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            *ports.node_args(head),
        ]
        if head:
            command += ["--head", "--include-dashboard=false", f"--temp-dir={self.temp_dir}"]
        else:
            command += [f"--address={self.address}"]
        if self.cpus is not None:
            command.append(f"--num-cpus={self.cpus}")
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env
        )
        self._processes.append(process)
        self._wait_started(process, "head" if head else "worker")

    @staticmethod
    def _wait_started(process: subprocess.Popen, role: str) -> None:
        """Block until `ray start` reports the node running; keep draining its output after."""
        lines: list[str] = []
        started = threading.Event()

        def drain() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if len(lines) < 200:
                    lines.append(line.rstrip())
                if "Ray runtime started" in line:
                    started.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while not started.is_set():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(lines[-15:])
                raise FedsiloError(f"the local Ray {role} node did not start:\n{tail}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the nodes this object started (workers first), then remove its temp dir."""
        for process in reversed(self._processes):
            _stop_group(process)
        self._processes.clear()
        if self._own_temp:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def _stop_group(process: subprocess.Popen) -> None:
    try:
        group = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            # `ray start --block` exits after terminating its children; sweep any left in its group.
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return
