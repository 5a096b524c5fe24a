"""GET /v1/status and `fedsilo peer status`: jobs, budgets left, list quotas, reachable members.

Real daemons on 127.0.0.1 over mutual TLS. bank-b holds a job bank-a proposed (its
budget reserved) and shares a list with bank-a; bank-c's address is a socket that
accepts connections and never answers, so the status page must report it unreachable
within the per-member timeout instead of hanging. A member that takes part in nothing
sees no job, no budget and no list.
"""

import asyncio
import contextlib
import json
import time
from urllib.parse import urlsplit

import pytest

from fedsilo.cli import main
from fedsilo.peers.daemon.roles.views import PROBE_SECONDS

from ._consortium import make_consortium, member_client, run, running, signed
from .test_daemon_refusals import propose

LIST_TOML = """
[lists.high-risk]
path = "high-risk.csv"
id-column = "client"
kind = "client"
psi = ["bank-a"]
psi-quota = 500
queriers = { bank-a = 40 }
"""


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    consortium = make_consortium(tmp_path_factory.mktemp("status"), extra_members=(("subsidiary", "peer"),))
    (consortium.root / "bank-b" / "high-risk.csv").write_text("client\nC-1\nC-2\n")
    path = consortium.config_path("bank-b")
    path.write_text(path.read_text() + LIST_TOML)
    return consortium


@contextlib.asynccontextmanager
async def silent(address):
    """A TCP listener at `address` that accepts connections and never answers (a hung daemon)."""
    held = []

    async def hold(reader, writer):
        held.append(writer)
        await asyncio.sleep(3600)

    parts = urlsplit(address)
    server = await asyncio.start_server(hold, parts.hostname, parts.port)
    try:
        yield
    finally:
        for writer in held:
            writer.close()
        server.close()


def test_status_shows_jobs_budgets_quotas_and_reachable_members(consortium, tmp_path, capsys):
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "status-1", ["bank-a", "bank-b"]))
    b = consortium.addresses["bank-b"]

    async def body():
        async with running(consortium, ["bank-a", "bank-b"]), silent(consortium.addresses["bank-c"]):
            assert (await propose(consortium, envelope))["decision"] == "accepted"
            async with member_client(consortium, "bank-a") as client:
                started = time.monotonic()
                seen = await client.call("GET", f"{b}/v1/status")
                elapsed = time.monotonic() - started
                budget = await client.call("GET", f"{b}/v1/budget")
            async with member_client(consortium, "subsidiary") as client:
                outsider = await client.call("GET", f"{b}/v1/status")
            identity = str(consortium.identity_dir("bank-a"))
            text = await asyncio.to_thread(main, ["peer", "status", "--peer", b, "--identity", identity])
            printed = capsys.readouterr().out
            raw = await asyncio.to_thread(main, ["peer", "status", "--peer", b, "--identity", identity, "--json"])
            return seen, elapsed, budget, outsider, (text, printed), (raw, capsys.readouterr().out)

    seen, elapsed, budget, outsider, (code, printed), (raw_code, raw) = run(body())

    assert seen["you"] == "bank-a" and seen["jobs"] == {"accepted": 1}
    [job] = seen["job_list"]
    assert (job["job_id"], job["state"], job["setup"], job["dp"], job["host"]) == (
        "status-1",
        "accepted",
        "horizontal",
        "local",
        "bank-a",
    )
    [source] = seen["budgets"]
    assert source == budget["sources"][0] and source["source"] == "credit-card"
    assert source["reserved_epsilon"] > 0 and source["remaining_epsilon"] == pytest.approx(
        8.0 - source["reserved_epsilon"]
    )
    [quota] = seen["lists"]
    assert (quota["name"], quota["psi_left"], quota["query_left"]) == ("high-risk", 500, 40)
    members = {m["member"]: m for m in seen["members"]}
    assert set(members) == {"bank-a", "bank-c", "subsidiary"}  # other members with an address; not the owner
    assert members["bank-a"]["reachable"] and members["bank-a"]["detail"].startswith("answered in ")
    assert not members["bank-c"]["reachable"] and members["bank-c"]["detail"] == f"no answer within {PROBE_SECONDS:g} s"
    assert not members["subsidiary"]["reachable"]  # nothing listens there: refused at once
    assert elapsed < PROBE_SECONDS + 3, "a hung member held the status page past its timeout"

    # need-to-know: a member in no job here sees no job, budget or list, only who is reachable
    assert outsider["job_list"] == [] and outsider["budgets"] == [] and outsider["lists"] == []
    assert {m["member"] for m in outsider["members"]} == {"bank-a", "bank-c", "subsidiary"}

    assert code == 0 and raw_code == 0 and json.loads(raw)["job_list"] == seen["job_list"]
    assert "status-1                 accepted   horizontal/local DP, host bank-a" in printed
    assert f"credit-card              ε left {source['remaining_epsilon']:.4f} of 8" in printed
    assert "bank-a: high-risk          PSI left 500, queries left 40 per 86400 s" in printed
    assert "bank-c                   UNREACHABLE  no answer within 3 s" in printed
    assert f"audit: hash chain verified; {len(seen['audit']['entries'])} recent entries of yours" in printed
    assert {e["actor"] for e in seen["audit"]["entries"]} == {"bank-a"}  # its own: the job it proposed
