"""A supervisor that dies without stopping its children: the next start stops them."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fedsilo.peers.deployment.processes import REGISTRY_NAME, stop_leftover_processes

SUPERVISOR = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from fedsilo.peers.deployment.processes import Supervisor
    supervisor = Supervisor(Path(sys.argv[1]), {})
    for name in ("superlink", "supernode"):
        child = supervisor.start(name, [sys.executable, "-c", "import time; time.sleep(600)"])
        print(child.process.pid, flush=True)
    time.sleep(600)
""")


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_children_of_a_killed_supervisor_are_stopped_at_the_next_start(tmp_path):
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    pids = [int(parent.stdout.readline()) for _ in range(2)]
    parent.send_signal(signal.SIGKILL)  # no atexit, no stop(): the children are orphaned
    parent.wait(timeout=30)
    assert all(_running(pid) for pid in pids)
    assert (tmp_path / REGISTRY_NAME).exists()

    assert sorted(stop_leftover_processes(tmp_path)) == ["superlink", "supernode"]
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(pid) for pid in pids)
    assert not (tmp_path / REGISTRY_NAME).exists()
    assert stop_leftover_processes(tmp_path) == []  # nothing left, nothing signalled


def test_a_recycled_pid_is_never_signalled(tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        # a registry naming the bystander's pid with another start time: a recycled pid
        (tmp_path / REGISTRY_NAME).write_text(f'[{{"name": "superlink", "pgid": {bystander.pid}, "start": 1}}]')
        assert stop_leftover_processes(tmp_path) == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_clean_stop_leaves_no_registry(tmp_path):
    from fedsilo.peers.deployment.processes import Supervisor

    supervisor = Supervisor(tmp_path, {})
    child = supervisor.start("superlink", [sys.executable, "-c", "import time; time.sleep(600)"])
    assert (tmp_path / REGISTRY_NAME).exists()
    supervisor.stop()
    assert child.process.poll() is not None
    assert not (tmp_path / REGISTRY_NAME).exists()
