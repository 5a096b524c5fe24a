"""The processes of one deployed job: started together, watched, stopped together.

Each child runs in its own session (process group), so that stopping it also stops
whatever it started (Flower's SuperExec starts one process per task). `check()` turns
a child that died on its own into a `DeploymentError` naming it and the tail of its
log, so a crashed SuperLink or SuperNode is a failed job, not a hang. `stop()` sends
SIGTERM to every group, waits, then SIGKILLs what is left; it is idempotent and also
runs when the Python process exits normally.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from privacy.errors import FedsiloError

STOP_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 15


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
            process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**self.env, **(env or {})}, start_new_session=True)
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def check(self, expected_done: Sequence[str] = ()) -> None:
        """Raise DeploymentError if a child other than those in `expected_done` has exited."""
        for child in self.children:
            code = child.process.poll()
            if code is not None and child.name not in expected_done:
                raise DeploymentError(f"{child.name} exited with code {code} (log: {child.log_path}):\n"
                                      f"{child.log_tail()}")

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
        atexit.unregister(self.stop)


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
