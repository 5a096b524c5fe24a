"""The processes of one deployed job: started together, watched, stopped together.

Each child runs in its own session (process group), so that stopping it also stops
whatever it started (Flower's SuperExec starts one process per task). `check()` turns
a child that died on its own into a `DeploymentError` naming it and the tail of its
log, so a crashed SuperLink or SuperNode is a failed job, not a hang. `stop()` sends
SIGTERM to every group, waits, then SIGKILLs what is left; it is idempotent and also
runs when the Python process exits normally.

The supervisor keeps a registry of its children (`processes.json` in its log folder:
name, process group, start time) while they run. If the supervising process dies
without stopping them (SIGKILL, power loss), its children are orphaned;
`stop_leftover_processes` reads the registry at the next start and stops the groups
that are still running. A group is recognised by its id and, while its leader lives,
by the leader's start time, so a recycled pid is never signalled (Linux does not reuse
a pid still in use as a process group id).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedsilo.errors import FedsiloError

STOP_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 15
REGISTRY_NAME = "processes.json"


class DeploymentError(FedsiloError):
    """A deployed job could not start, or one of its processes failed."""


def venv_command(name: str) -> str:
    """The console script `name` of the running interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-LOG_TAIL_LINES:])


class Supervisor:
    """Starts named children (logs under `log_dir`), reports crashes, stops them all."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env)
        self.children: list[Child] = []
        self._stopped = False
        atexit.register(self.stop)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        """Start `argv` in its own session; `env` adds to the supervisor's environment."""
        if self._stopped:
            raise DeploymentError(f"cannot start {name}: this job's processes were already stopped")
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self.env, **(env or {})},
                start_new_session=True,
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        self._write_registry()
        return child

    def _write_registry(self) -> None:
        entries = [
            {"name": c.name, "pgid": c.process.pid, "start": process_start_ticks(c.process.pid)} for c in self.children
        ]
        path = self.log_dir / REGISTRY_NAME
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(entries))
        os.replace(partial, path)

    def check(self, expected_done: Sequence[str] = ()) -> None:
        """Raise DeploymentError if a child other than those in `expected_done` has exited."""
        for child in self.children:
            code = child.process.poll()
            if code is not None and child.name not in expected_done:
                raise DeploymentError(
                    f"{child.name} exited with code {code} (log: {child.log_path}):\n{child.log_tail()}"
                )

    def pids(self) -> list[int]:
        return [c.process.pid for c in self.children]

    def alive(self) -> list[int]:
        """Running processes left in the children's groups (grandchildren included)."""
        return [pid for child in self.children for pid in live_group_members(child.process.pid)]

    def stop(self) -> None:
        """Stop every child's process group (SIGTERM, then SIGKILL after a grace period)."""
        if self._stopped:
            return
        self._stopped = True
        for child in reversed(self.children):
            _signal_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in self.children:
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in self.children:
            _signal_group(child.process.pid, signal.SIGKILL)  # members that outlived the leader, too
            try:
                child.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        # A SIGKILLed process is not gone at once: on a loaded machine a grandchild can
        # still be tearing down when its leader has been reaped. Return only when every
        # group is empty, so that "stopped" means stopped.
        _wait_until_empty([child.process.pid for child in self.children], STOP_GRACE_SECONDS)
        (self.log_dir / REGISTRY_NAME).unlink(missing_ok=True)
        atexit.unregister(self.stop)


def stop_leftover_processes(log_dir: Path) -> list[str]:
    """Stop the still-running children a dead supervisor registered in `log_dir`.

    Returns the names of the children whose groups were found running and stopped
    (SIGTERM, then SIGKILL after the grace period); removes the registry. A missing or
    unreadable registry means nothing to stop.
    """
    path = Path(log_dir) / REGISTRY_NAME
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    running = []
    for entry in entries:
        pgid, start = int(entry["pgid"]), entry.get("start")
        leader_start = process_start_ticks(pgid)
        if leader_start is not None and leader_start != start:
            continue  # the pid was recycled by an unrelated process
        if live_group_members(pgid):
            running.append((str(entry["name"]), pgid))
    for _, pgid in running:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and any(live_group_members(pgid) for _, pgid in running):
        time.sleep(0.1)
    for _, pgid in running:
        _signal_group(pgid, signal.SIGKILL)
    _wait_until_empty([pgid for _, pgid in running], STOP_GRACE_SECONDS)
    path.unlink(missing_ok=True)
    return [name for name, _ in running]


def _wait_until_empty(pgids: Sequence[int], timeout: float) -> None:
    """Poll until no running process is left in any of `pgids`, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while any(live_group_members(pgid) for pgid in pgids) and time.monotonic() < deadline:
        time.sleep(0.05)


def process_start_ticks(pid: int, running_only: bool = False) -> int | None:
    """The start time of process `pid` in clock ticks since boot (/proc), or None if it is gone
    (with `running_only`, also if it is a zombie: it exited, only its parent has not collected it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if running_only and fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def live_group_members(pgid: int) -> list[int]:
    """Pids of the running (not zombie) processes in process group `pgid` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
