"""Strings another member sends that become a process argument are checked first (issue 15, item 0).

The job's host tells each participant where its SuperLink listens (`fleet_address`);
the participant passes it to its SuperNode as `--superlink VALUE`. A host that sends
an option instead (`--insecure`), or extra words, is refused before anything starts.
"""

import pytest

from fedsilo.peers.daemon.training import is_fleet_address
from fedsilo.peers.errors import PeerUnreachable

from ._consortium import make_consortium, member_client, run, running, signed

BAD = [
    "--insecure",
    "-h:1",
    "127.0.0.1:9092 --insecure",
    "127.0.0.1",
    "127.0.0.1:0",
    "127.0.0.1:99999",
    "host:92x",
    "",
    "[::1",
    "a b:1",
    "127.0.0.1:9092\n",
    9092,
    None,
]


def test_a_fleet_address_is_host_and_port_only():
    for good in ("127.0.0.1:9092", "[::1]:9092", "link.bank-a.example:443", "localhost:65535"):
        assert is_fleet_address(good), good
    for bad in BAD:
        assert not is_fleet_address(bad), bad


def test_a_host_cannot_pass_an_option_to_the_participants_supernode(tmp_path):
    consortium = make_consortium(tmp_path, peers=("bank-a", "bank-b"))
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "start-1"))
    url = consortium.addresses["bank-b"]

    async def body():
        async with running(consortium, ["bank-b"]):
            async with member_client(consortium, "bank-a") as host:
                reply = await host.call("POST", f"{url}/v1/proposals", envelope)
                refusals = []
                for bad in BAD[:4]:
                    with pytest.raises(PeerUnreachable) as refused:
                        await host.call("POST", f"{url}/v1/jobs/start-1/start", {"fleet_address": bad})
                    refusals.append(str(refused.value))
                view = await host.call("GET", f"{url}/v1/jobs/start-1")
                await host.call("POST", f"{url}/v1/jobs/start-1/cancel", {})
        return reply, refusals, view

    reply, refusals, view = run(body())
    assert reply["decision"] == "accepted"
    for message in refusals:
        assert "answered 400" in message and "it becomes the SuperNode's --superlink argument" in message
    assert view["state"] == "accepted"  # nothing started
    assert not (consortium.root / "bank-b" / "state" / "jobs" / "start-1").exists()
