"""`fedsilo peer start --background` and `fedsilo peer stop`, run as a user runs them.

Every command is a real `fedsilo` process; the daemon it starts is a real process on
127.0.0.1 that a member reaches over mutual TLS. The test checks the PID file, the log
file, the refusals (already running, nothing running, stale PID file) and that no
process is left after `stop`.
"""

import json
import subprocess
import sys

import pytest

from fedsilo.peers.daemon.background import process_start_time

from ._consortium import make_consortium, member_client, run


def fedsilo(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "fedsilo.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def consortium(tmp_path):
    return make_consortium(tmp_path, peers=("bank-a",))


def test_start_in_the_background_then_stop_leaves_no_process(consortium):
    config = str(consortium.config_path("bank-a"))
    state = consortium.root / "bank-a" / "state"

    nothing = fedsilo("peer", "stop", "--config", config)
    assert nothing.returncode == 2
    assert "no peer daemon runs for" in nothing.stderr and "--background" in nothing.stderr

    started = fedsilo("peer", "start", "--config", config, "--background")
    assert started.returncode == 0, started.stderr
    record = json.loads((state / "peer.pid").read_text())
    pid = record["pid"]
    assert f"started in the background (pid {pid})" in started.stdout
    assert process_start_time(pid) == record["started"]
    assert oct((state / "peer.pid").stat().st_mode & 0o777) == "0o600"

    async def health():
        async with member_client(consortium, "bank-a") as client:
            return await client.call("GET", f"{consortium.addresses['bank-a']}/v1/health")

    try:
        assert run(health()) == {"status": "ok", "peer": "bank-a"}
        again = fedsilo("peer", "start", "--config", config, "--background")
        assert again.returncode == 2
        assert f"a peer daemon already runs for {state} (pid {pid}" in again.stderr
        assert "fedsilo peer stop --config" in again.stderr
        assert json.loads((state / "peer.pid").read_text())["pid"] == pid  # the running one is untouched
    finally:
        stopped = fedsilo("peer", "stop", "--config", config)
    assert stopped.returncode == 0, stopped.stderr
    assert f"peer daemon (pid {pid}) stopped after" in stopped.stdout
    assert process_start_time(pid) is None  # gone (or exited, waiting only for init to collect it)
    assert not (state / "peer.pid").exists()
    log = (state / "peer.log").read_text()
    assert "peer bank-a listening on https://127.0.0.1:" in log and "peer bank-a stopped" in log
    assert "PRIVATE KEY" not in log

    after = fedsilo("peer", "stop", "--config", config)
    assert after.returncode == 2 and "nothing to stop" in after.stderr


def test_a_stale_pid_file_is_refused_and_cleared_and_nothing_is_signalled(consortium):
    config = str(consortium.config_path("bank-a"))
    state = consortium.root / "bank-a" / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    # A live process, but not the daemon that wrote the file: its start time differs.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start_time(bystander.pid)
        (state / "peer.pid").write_text(json.dumps({"pid": bystander.pid, "started": started - 1, "config": config}))
        stale = fedsilo("peer", "stop", "--config", config)
        assert stale.returncode == 2
        assert f"is stale: process {bystander.pid} is no longer the daemon" in stale.stderr
        assert "Nothing was signalled" in stale.stderr
        assert bystander.poll() is None, "a recycled pid was signalled"
        assert not (state / "peer.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_daemon_that_cannot_start_says_why(consortium):
    config = consortium.config_path("bank-a")
    (consortium.root / "bank-a" / "identity" / "peer.key").rename(consortium.root / "bank-a" / "peer.key.away")
    failed = fedsilo("peer", "start", "--config", str(config), "--background")
    assert failed.returncode == 2
    assert "the peer daemon exited at start" in failed.stderr and "peer.log" in failed.stderr
    assert not (consortium.root / "bank-a" / "state" / "peer.pid").exists()
