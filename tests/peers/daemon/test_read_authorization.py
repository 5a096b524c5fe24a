"""Reads follow need-to-know; the audit log is for the peer's own operators (issue 15, item 3).

Three real daemons over mutual TLS. The model owner submits job `need-1` to bank-a
(participants bank-a, bank-b, bank-c; all three must accept); bank-c's policy declines
it with a reason, so the job fails before training. `subsidiary` is a consortium member
with a valid certificate and no part in anything: it plays the curious member, asking
every read route with its full knowledge of the API. The operator reads over the admin
socket, with no certificate at all.
"""

import asyncio
import json
import stat

import aiohttp
import pytest

from fedsilo.cli import main
from fedsilo.peers.errors import PeerUnreachable

from ._consortium import OWNER, make_consortium, member_client, run, running, signed


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    consortium = make_consortium(tmp_path_factory.mktemp("reads"), extra_members=(("subsidiary", "peer"),))
    consortium.write_peer_toml("bank-c", policy='model-owners = ["risk-dept"]\nmax-epsilon-per-job = 0.5\n')
    return consortium


async def get(consortium, member, peer, path):
    """(status, body) of GET `path` at `peer` as `member`."""
    async with member_client(consortium, member) as client:
        try:
            return 200, await client.call("GET", f"{consortium.addresses[peer]}{path}")
        except PeerUnreachable as refused:
            return int(str(refused).split(" answered ")[1][:3]), str(refused).split(": ", 1)[1]


async def operator_get(consortium, peer, path, method="GET"):
    socket_path = consortium.root / peer / "state" / "admin.sock"
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path))) as session:
        async with session.request(method, f"http://operator{path}") as reply:
            return reply.status, await reply.json()


def test_members_see_only_their_jobs_and_only_operators_read_the_audit_log(consortium, tmp_path):
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "need-1", epsilon=1.0))
    a = "bank-a"

    async def body():
        async with running(consortium):
            async with member_client(consortium, OWNER) as owner:
                await owner.call("POST", f"{consortium.addresses[a]}/v1/jobs", envelope)
                for _ in range(300):
                    if (await owner.call("GET", f"{consortium.addresses[a]}/v1/jobs/need-1"))["state"] == "failed":
                        break
                    await asyncio.sleep(0.1)
            seen = {}
            for member in ("subsidiary", OWNER, "bank-b", a):
                for path in (
                    "/v1/jobs",
                    "/v1/jobs/need-1",
                    "/v1/jobs/no-such-job",
                    "/v1/budget",
                    "/v1/status",
                    "/v1/audit",
                ):
                    seen[member, path] = await get(consortium, member, a, path)
            for path in ("/v1/jobs", "/v1/jobs/need-1", "/v1/budget", "/v1/status", "/v1/audit?since=1"):
                seen["operator", path] = await operator_get(consortium, a, path)
            seen["operator", "POST /v1/jobs"] = await operator_get(consortium, a, "/v1/jobs", "POST")
            seen["operator", "/v1/lists"] = await operator_get(consortium, a, "/v1/lists")
            out = tmp_path / "audit.json"
            code = await asyncio.to_thread(
                main, ["audit", "export", "--config", str(consortium.config_path(a)), "--out", str(out)]
            )
            return seen, code, json.loads(out.read_text())

    seen, code, exported = run(body())

    # the curious member: nothing of a job it has no part in, nor of the sources, nor of the audit log
    assert seen["subsidiary", "/v1/jobs"] == (200, {"jobs": []})
    status, message = seen["subsidiary", "/v1/jobs/need-1"]
    assert status == 403 and message.startswith("subsidiary takes part in no job 'need-1' here")
    assert seen["subsidiary", "/v1/jobs/no-such-job"] == (403, message.replace("need-1", "no-such-job"))
    assert seen["subsidiary", "/v1/budget"] == (200, {"peer": a, "sources": []})
    assert seen["subsidiary", "/v1/status"][1]["jobs"] == {} and seen["subsidiary", "/v1/status"][1]["sources"] == []
    for member in ("subsidiary", OWNER, "bank-b", a):  # no certificate is an operator, not even the peer's own
        status, message = seen[member, "/v1/audit"]
        assert status == 403 and "is for its own operators" in message and "fedsilo audit export" in message

    # the owner sees its job with every participant's reason; a participant sees the others' decisions only
    owner_view = seen[OWNER, "/v1/jobs/need-1"][1]
    assert owner_view["state"] == "failed"
    reasons = {p["peer"]: (p["decision"], p["reason"]) for p in owner_view["participants"]}
    assert reasons["bank-c"][0] == "declined" and "above this peer's maximum of 0.5" in reasons["bank-c"][1]
    participant_view = seen["bank-b", "/v1/jobs/need-1"][1]
    assert {p["peer"]: (p["decision"], p["reason"]) for p in participant_view["participants"]} == {
        **reasons,
        "bank-c": ("declined", ""),
    }
    assert [j["job_id"] for j in seen[OWNER, "/v1/jobs"][1]["jobs"]] == ["need-1"]
    assert [s["source"] for s in seen[OWNER, "/v1/budget"][1]["sources"]] == ["credit-card"]

    # the operator, over the admin socket, reads everything and nothing else
    assert seen["operator", "/v1/jobs/need-1"] == (200, owner_view)
    assert seen["operator", "/v1/status"][1]["you"] == "operator"
    status, log = seen["operator", "/v1/audit?since=1"]
    assert status == 200 and log["chain_ok"] and log["entries"][0]["seq"] == 2
    assert any(e["action"] == "job.submit" and e["job"] == "need-1" for e in log["entries"])
    assert seen["operator", "POST /v1/jobs"][0] == 403 and seen["operator", "/v1/lists"][0] == 403
    assert code == 0 and exported["peer"] == a and exported["chain_ok"]
    assert exported["entries"][1 : len(log["entries"]) + 1] == log["entries"]
    socket_mode = (consortium.root / a / "state" / "admin.sock").stat().st_mode
    assert stat.S_ISSOCK(socket_mode) and stat.S_IMODE(socket_mode) == 0o600


def test_audit_export_says_when_the_daemon_is_not_there(consortium, tmp_path, capsys):
    """Without a running daemon behind the socket the operator is told so; nothing is written."""
    config = consortium.config_path("bank-b")
    assert main(["audit", "export", "--config", str(config), "--out", str(tmp_path / "log.json")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("fedsilo: error: ")
    # no socket file (the daemon never ran), or a socket left by one that stopped
    assert ("the peer's daemon is not running" in error) or ("is the daemon running, and is this its account?" in error)
    assert not (tmp_path / "log.json").exists()
