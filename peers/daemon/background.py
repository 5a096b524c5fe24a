"""The daemon as an operator runs it: a PID file, a background start with a log file, a stop.

A running daemon holds `STATE/peer.pid` (JSON: its pid, its process start time as the
kernel counts it, its peer.toml), written once it listens and removed when it stops
cleanly (`PidFile`). The start time tells a live daemon from a stale file whose pid the
system has since given to another process, so a recycled pid is never signalled.

`start_background` runs `fedsilo peer start` as a new session (no terminal), its output
appended to `STATE/peer.log`, and returns once the daemon listens (or says why it did not,
with the log's last lines). `stop` sends SIGTERM to the daemon of a peer.toml and waits
for it to exit; the daemon then stops the engine processes of its jobs (SuperLink,
SuperNodes), which is why it is not killed after a timeout. Both refuse clearly, with
what to do, when a daemon already runs, none runs, or the PID file is stale.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fedsilo.errors import FedsiloError
from fedsilo.peers.deployment.processes import process_start_ticks

PID_FILE = "peer.pid"
LOG_FILE = "peer.log"
START_TIMEOUT_SECONDS = 180.0


def process_start_time(pid: int) -> int | None:
    """The running process's start time in clock ticks since boot, or None if it is gone or a zombie."""
    return process_start_ticks(pid, running_only=True)


@dataclass(frozen=True)
class Running:
    """What a PID file says: the daemon's pid, its start time, and its peer.toml."""

    pid: int
    started: int
    config: str

    @property
    def alive(self) -> bool:
        """Whether this very process still runs (not merely some process with the same pid)."""
        return process_start_time(self.pid) == self.started


class PidFile:
    """`STATE/peer.pid` of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / PID_FILE

    def read(self) -> Running | None:
        """The recorded daemon, or None without a file; FedsiloError if the file is not a PID file."""
        try:
            record = json.loads(self.path.read_text())
            return Running(int(record["pid"]), int(record["started"]), str(record["config"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise FedsiloError(
                f"{self.path} is not a PID file fedsilo wrote ({error.__class__.__name__}): if no daemon of this "
                "state directory runs, remove it"
            ) from None

    def check_free(self) -> None:
        """FedsiloError if a daemon of this state directory runs; a stale file is removed."""
        running = self.read()
        if running is not None and running.alive:
            raise FedsiloError(
                f"a peer daemon already runs for {self.path.parent} (pid {running.pid}, {running.config}): "
                f"stop it first with `fedsilo peer stop --config {running.config}`"
            )
        if running is not None:
            self.path.unlink(missing_ok=True)

    def write(self, config: Path) -> None:
        """Record this process as the state directory's daemon (mode 0600)."""
        pid = os.getpid()
        started = process_start_time(pid)
        assert started is not None
        temporary = self.path.with_suffix(".pid.tmp")
        temporary.write_text(json.dumps({"pid": pid, "started": started, "config": str(config)}) + "\n")
        temporary.chmod(0o600)
        temporary.replace(self.path)

    def remove(self) -> None:
        """Remove the file if it still names this process."""
        running = self.read()
        if running is not None and running.pid == os.getpid():
            self.path.unlink(missing_ok=True)


def start_background(config_path: Path, state_dir: Path) -> Running:
    """Start `fedsilo peer start --config CONFIG` detached; return once it listens.

    FedsiloError if a daemon already runs for the state directory, or if the new one
    exits or does not listen within `START_TIMEOUT_SECONDS` (with its log's last lines).
    """
    pid_file = PidFile(state_dir)
    pid_file.check_free()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = state_dir / LOG_FILE
    with open(log_path, "ab") as log:
        os.chmod(log_path, 0o600)
        child = subprocess.Popen(
            [sys.executable, "-m", "fedsilo.cli", "peer", "start", "--config", str(config_path.resolve())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # no terminal: the shell's hangup and Ctrl-C do not reach it
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise FedsiloError(
                f"the peer daemon exited at start (code {child.returncode}); the end of {log_path}:\n" + _tail(log_path)
            )
        running = pid_file.read()
        if running is not None and running.pid == child.pid:
            return running
        time.sleep(0.2)
    child.terminate()
    raise FedsiloError(
        f"the peer daemon did not listen within {START_TIMEOUT_SECONDS:.0f} s and was stopped; the end of "
        f"{log_path}:\n" + _tail(log_path)
    )


def stop(config_path: Path, state_dir: Path, timeout: float) -> tuple[Running, float]:
    """SIGTERM the daemon of this state directory and wait for it to exit: (it, seconds taken).

    FedsiloError if none runs (no PID file), if the PID file is stale (removed, said so), or
    if it is still stopping after `timeout` seconds.
    """
    pid_file = PidFile(state_dir)
    running = pid_file.read()
    if running is None:
        raise FedsiloError(
            f"no peer daemon runs for {state_dir} (no {PID_FILE} there): nothing to stop; start one with "
            f"`fedsilo peer start --config {config_path} --background`"
        )
    if not running.alive:
        pid_file.path.unlink(missing_ok=True)
        raise FedsiloError(
            f"the PID file {pid_file.path} is stale: process {running.pid} is no longer the daemon that wrote it "
            "(it crashed or was killed). Nothing was signalled; the file is removed, so "
            f"`fedsilo peer start --config {config_path}` can start a new one"
        )
    began = time.monotonic()
    os.kill(running.pid, signal.SIGTERM)
    while running.alive:
        if time.monotonic() - began > timeout:
            raise FedsiloError(
                f"the peer daemon (pid {running.pid}) is still stopping after {timeout:.0f} s (it stops its jobs' "
                f"engine processes first); wait, or run `fedsilo peer stop` again with a longer --timeout"
            )
        time.sleep(0.1)
    return running, time.monotonic() - began


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
