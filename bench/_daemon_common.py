"""What the daemon benchmarks share: a free loopback port and a real `fedsilo peer start` process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daemon(config: Path, url: str) -> subprocess.Popen[bytes]:
    """`fedsilo peer start --config CONFIG` in its own session, once it accepts connections at `url`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "fedsilo.cli", "peer", "start", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    host, port = url.removeprefix("https://").split(":")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            sys.exit(f"the daemon exited with {process.returncode}:\n{output}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    sys.exit("the daemon did not start listening within 180 s")
