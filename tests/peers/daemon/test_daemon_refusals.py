"""The daemon refuses bad input and attacks with a clear error, an audit entry and no state change.

Real daemons in-process on 127.0.0.1 with real certificates; the test plays the job's
host (bank-a) proposing to bank-b, or the model owner submitting, over mutual TLS. Every
test runs in a standard and in a gm consortium.
"""

import asyncio
import copy
import json
import sqlite3
import ssl

import aiohttp
import pytest

from fedsilo.peers.daemon.app import ROUTES
from fedsilo.peers.daemon.openapi import spec
from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.identity.consortium import admit, init_consortium, init_peer

from ._consortium import OWNER, make_consortium, member_client, run, running, signed


@pytest.fixture(scope="module", params=["standard", "gm"])
def consortium(tmp_path_factory, request):
    """The same refusals under both crypto suites (under gm every member request is sealed end to end)."""
    root = tmp_path_factory.mktemp(f"consortium-{request.param}")
    return make_consortium(root, peers=("bank-a", "bank-b"), extra_members=(("intruder", "peer"),), suite=request.param)


def state_of(consortium, name):
    """(job rows, ledger rows, audit entries) of a peer, read from its SQLite files."""
    state = consortium.root / name / "state"
    with sqlite3.connect(state / "state.sqlite") as conn:
        jobs = conn.execute("SELECT job_id, state FROM jobs ORDER BY job_id").fetchall()
        audit = conn.execute("SELECT actor, action, outcome, detail FROM audit ORDER BY seq").fetchall()
    with sqlite3.connect(state / "ledger.sqlite") as conn:
        ledger = conn.execute("SELECT job_id, state FROM jobs ORDER BY job_id").fetchall()
    return jobs, ledger, audit


async def propose(consortium, envelope, as_peer="bank-a", to="bank-b"):
    async with member_client(consortium, as_peer) as client:
        return await client.call("POST", f"{consortium.addresses[to]}/v1/proposals", envelope)


def refused_without_change(consortium, action, expect, name="bank-b"):
    """Run `action` (a coroutine factory) against a running bank-b; assert refusal, audit, no change."""

    async def body():
        async with running(consortium, ["bank-b"]):
            before = state_of(consortium, name)
            outcome = await action()
            after = state_of(consortium, name)
        return before, outcome, after

    before, outcome, after = run(body())
    assert after[0] == before[0] and after[1] == before[1], "a refusal changed jobs or the ledger"
    new = after[2][len(before[2]) :]
    assert new, "no audit entry for a refusal"
    assert expect in new[-1][3], new[-1]
    return outcome, new[-1]


def test_a_valid_proposal_reserves_budget_and_cancel_releases_it(consortium, tmp_path):
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "good-1"))

    async def body():
        async with running(consortium, ["bank-b"]):
            reply = await propose(consortium, envelope)
            accepted = state_of(consortium, "bank-b")
            async with member_client(consortium, OWNER) as client:
                budget = await client.call("GET", f"{consortium.addresses['bank-b']}/v1/budget")
                cancelled = await client.call("POST", f"{consortium.addresses['bank-b']}/v1/jobs/good-1/cancel", {})
            return reply, accepted, budget, cancelled, state_of(consortium, "bank-b")

    reply, accepted, budget, cancelled, after = run(body())
    assert reply["decision"] == "accepted" and reply["rows"] == 400 and reply["n_train"] == 320
    assert ("good-1", "accepted") in accepted[0] and ("good-1", "reserved") in accepted[1]
    source = budget["sources"][0]
    assert source["remaining_epsilon"] < 8.0 and source["reserved_epsilon"] == pytest.approx(
        8.0 - source["remaining_epsilon"]
    )
    assert cancelled["state"] == "cancelled"
    assert ("good-1", "cancelled") in after[0] and all(job != "good-1" for job, _ in after[1])
    actions = [a[1] for a in after[2]]
    assert actions[-3:] == ["budget.release", "job.cancel"][-2:] or "job.cancel" in actions


def test_replayed_job_is_refused(consortium, tmp_path):
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "replay-1"))
    run(_accept(consortium, envelope))

    async def replay():
        with pytest.raises(PeerUnreachable, match="409") as error:
            await propose(consortium, envelope)
        return str(error.value)

    message, _ = refused_without_change(consortium, replay, "replayed")
    assert "already known here" in message


async def _accept(consortium, envelope):
    async with running(consortium, ["bank-b"]):
        assert (await propose(consortium, envelope))["decision"] == "accepted"


@pytest.mark.parametrize(
    "tamper, status, fragment",
    [
        (lambda e: e["job"]["run_config"].__setitem__("dp.epsilon", 2.5), "403", "signature does not verify"),
        (
            lambda e: e["job"].__setitem__("participants", ["bank-a", "bank-b", "intruder"]),
            "403",
            "signature does not verify",
        ),
        (lambda e: e.__setitem__("signature", e["signature"][:-8] + "AAAAAAA="), "403", "signature does not verify"),
        (lambda e: e.pop("certificate"), "400", "exactly the keys"),
    ],
)
def test_an_altered_job_is_refused(consortium, tmp_path, tamper, status, fragment):
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "altered-1"))
    altered = copy.deepcopy(envelope)
    tamper(altered)

    async def attempt():
        with pytest.raises(PeerUnreachable, match=status):
            await propose(consortium, altered)

    refused_without_change(consortium, attempt, fragment)


def test_a_job_signed_by_a_peer_not_a_model_owner_is_refused(consortium, tmp_path):
    from fedsilo.peers.daemon.signed_job import job_document, sign_job

    intruder = consortium.identity("intruder")
    envelope = sign_job(intruder, job_document(consortium.job_toml(tmp_path / "job.toml", "forged-1"), "intruder"))

    async def attempt():
        with pytest.raises(PeerUnreachable, match="403"):
            await propose(consortium, envelope)

    refused_without_change(consortium, attempt, "not an admitted model owner")


def test_only_the_named_host_may_propose(consortium, tmp_path):
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "wrong-host-1"))

    async def attempt():
        with pytest.raises(PeerUnreachable, match="403"):
            await propose(consortium, envelope, as_peer="intruder")

    refused_without_change(consortium, attempt, "names bank-a as host but intruder proposes it")


@pytest.mark.parametrize(
    "job_kwargs, fragment",
    [
        ({"epsilon": 5.0}, "above this peer's maximum of 3"),
        ({"min_participants": 1}, "requires at least 2"),
        ({"extra": 'strategy = "fedadam"'}, None),
    ],
)
def test_policy_declines_are_audited_and_change_nothing(consortium, tmp_path, job_kwargs, fragment):
    if fragment is None:  # a policy that allows only fedavg
        consortium.write_peer_toml(
            "bank-b",
            policy='model-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\n'
            'min-participants = 2\nstrategies = ["fedavg"]\n',
        )
        fragment = "strategy fedadam is not allowed"
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", f"policy-{len(fragment)}", **job_kwargs))
    try:
        reply, entry = refused_without_change(consortium, lambda: propose(consortium, envelope), fragment)
    finally:
        consortium.write_peer_toml("bank-b")
    assert reply["decision"] == "declined" and fragment in reply["reason"]
    assert entry[1] == "job.decline"


def test_a_job_over_the_remaining_budget_is_declined(tmp_path):
    consortium = make_consortium(tmp_path, peers=("bank-a", "bank-b"))
    consortium.write_peer_toml("bank-b", epsilon=3.2)
    first = signed(consortium, consortium.job_toml(tmp_path / "a.toml", "budget-1", epsilon=3.0))
    second = signed(consortium, consortium.job_toml(tmp_path / "b.toml", "budget-2", epsilon=3.0))
    run(_accept(consortium, first))
    reply, _ = refused_without_change(consortium, lambda: propose(consortium, second), "over its budget")
    assert reply["decision"] == "declined" and "remaining budget is epsilon=" in reply["reason"]


def test_owner_not_allowed_by_policy_is_refused_at_submit(consortium, tmp_path):
    consortium.write_peer_toml("bank-b", policy="model-owners = []\nmax-epsilon-per-job = 3.0\n")
    envelope = signed(
        consortium,
        consortium.job_toml(tmp_path / "job.toml", "submit-1", host="bank-b", participants=["bank-b", "bank-a"]),
    )

    async def attempt():
        async with member_client(consortium, OWNER) as client:
            with pytest.raises(PeerUnreachable, match="403"):
                await client.call("POST", f"{consortium.addresses['bank-b']}/v1/jobs", envelope)

    try:
        refused_without_change(consortium, attempt, "model owner risk-dept may not propose jobs here")
    finally:
        consortium.write_peer_toml("bank-b")


def test_oversized_and_malformed_bodies(consortium):
    url = f"{consortium.addresses['bank-b']}/v1/proposals"

    async def raw_post(data: bytes):
        """POST `data` as it is (sealed end to end under gm, as every member request is); the refusal's text."""
        async with member_client(consortium, "bank-a") as client:
            with pytest.raises(PeerUnreachable) as refused:
                await client._send("POST", url, data, "application/json")
        return str(refused.value)

    refusal = refused_without_change(consortium, lambda: raw_post(b"x" * (2 << 20)), "larger than")[0]
    assert "answered 413" in refusal and "1048576 bytes" in refusal
    refusal = refused_without_change(consortium, lambda: raw_post(b'{"job": '), "not valid JSON")[0]
    assert "answered 400" in refusal and "not valid JSON" in refusal


def test_tls_refuses_clients_without_a_consortium_certificate(consortium, tmp_path):
    """No certificate, a self-signed one, or one from another CA: the handshake fails, no HTTP is read."""
    init_consortium(tmp_path / "other", "other")
    request = init_peer(tmp_path / "stranger", "bank-b")
    admit(tmp_path / "other", request, ("peer",), consortium.addresses["bank-b"], tmp_path / "stranger" / "peer.pem")
    ca = consortium.identity_dir("bank-b") / "ca.pem"
    url = f"{consortium.addresses['bank-b']}/v1/health"

    async def attempt(cert=None, key=None):
        context = ssl.create_default_context(cafile=str(ca))
        if cert:
            context.load_cert_chain(str(cert), str(key))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(url) as reply:
                    await reply.read()

    async def body():
        async with running(consortium, ["bank-b"]):
            before = state_of(consortium, "bank-b")
            await attempt()
            await attempt(tmp_path / "stranger" / "peer.pem", tmp_path / "stranger" / "peer.key")
            await attempt(tmp_path / "other" / "ca.pem", tmp_path / "other" / "ca.key")  # self-signed
            async with member_client(consortium, "bank-a") as client:
                health = await client.call("GET", url)
            return before, health, state_of(consortium, "bank-b")

    before, health, after = run(body())
    assert health == {"status": "ok", "peer": "bank-b"}
    assert before == after


def test_a_ca_certificate_not_in_the_manifest_is_refused(consortium, tmp_path):
    """Signed by the consortium CA but never put in the manifest the peer holds: 403, audited."""
    suite = consortium.identity("bank-b").manifest.suite
    request = init_peer(tmp_path / "late", "late-peer", None if suite == "standard" else suite)
    signing_key = None if suite == "standard" else request.with_name("signing.pub")
    ca_dir = consortium.root / "consortium"
    admit(ca_dir, request, ("peer",), "https://127.0.0.1:1", tmp_path / "late" / "peer.pem", signing_key=signing_key)
    # the CA signed it, but bank-b's manifest copy predates the admission
    from fedsilo.peers.identity.tls import client_context

    context = client_context(
        consortium.identity_dir("bank-b") / "ca.pem", tmp_path / "late" / "peer.pem", tmp_path / "late" / "peer.key"
    )

    async def attempt():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            async with session.get(f"{consortium.addresses['bank-b']}/v1/status") as reply:
                return reply.status, await reply.json()

    (status, body), entry = refused_without_change(consortium, attempt, "is not in the consortium manifest")
    assert status == 403 and entry[0] == "unknown"


def test_openapi_lists_exactly_the_served_routes():
    paths = spec()["paths"]
    served = {(path, method.lower()) for method, path, _ in ROUTES}
    described = {(path, method) for path, operations in paths.items() for method in operations}
    assert served == described


def test_audit_chain_verifies_and_names_an_altered_entry(consortium, capsys):
    from fedsilo.cli import main

    config = str(consortium.config_path("bank-b"))
    assert main(["audit", "verify", "--config", config]) == 0
    assert "audit log intact" in capsys.readouterr().out
    path = consortium.root / "bank-b" / "state" / "state.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE audit SET detail = 'nothing happened' WHERE seq = 3")
    assert main(["audit", "verify", "--config", config]) == 1
    assert "BROKEN at entry 3" in capsys.readouterr().out
    with sqlite3.connect(path) as conn:  # undo, for the other tests of this module
        row = conn.execute("SELECT * FROM audit WHERE seq = 3").fetchone()
    assert json.dumps(row)


def test_a_removed_member_is_refused_from_its_next_request_and_a_rollback_is_ignored(tmp_path, capsys):
    """`consortium remove` + the new manifest copied to a running peer: 403 from then on, audited."""
    import shutil

    from fedsilo.cli import main

    consortium = make_consortium(tmp_path / "c", peers=("bank-a", "bank-b"), rows=60)
    ca_dir = consortium.root / "consortium"
    old_manifest = (ca_dir / "manifest.json").read_bytes()

    async def status_as(name):
        async with member_client(consortium, name) as client:
            return await client.call("GET", f"{consortium.addresses['bank-b']}/v1/status")

    async def body():
        async with running(consortium, ["bank-b"]):
            before = await status_as("bank-a")
            assert main(["consortium", "remove", "bank-a", "--dir", str(ca_dir)]) == 0
            shutil.copy(ca_dir / "manifest.json", consortium.identity_dir("bank-b") / "manifest.json")
            with pytest.raises(PeerUnreachable) as removed:
                await status_as("bank-a")
            (consortium.identity_dir("bank-b") / "manifest.json").write_bytes(old_manifest)  # a stale copy
            with pytest.raises(PeerUnreachable) as rolled_back:
                await status_as("bank-a")
            still = await status_as(OWNER)  # the other members are unaffected
        return before, removed.value, rolled_back.value, still

    before, removed, rolled_back, still = run(body())
    assert (before["you"], before["manifest_version"]) == ("bank-a", 4)
    assert (still["you"], still["manifest_version"]) == (OWNER, 5)  # the newer manifest, not the stale copy
    for refusal in (removed, rolled_back):
        assert "403" in str(refusal) and "not a member's in this peer's consortium manifest" in str(refusal)
    with sqlite3.connect(consortium.root / "bank-b" / "state" / "state.sqlite") as conn:
        refusals = conn.execute("SELECT actor, detail FROM audit WHERE outcome = 'refused'").fetchall()
    assert len(refusals) == 2 and all(
        actor == "unknown" and "not in the consortium manifest" in detail for actor, detail in refusals
    )
    capsys.readouterr()
    assert main(["consortium", "remove", "bank-a", "--dir", str(ca_dir)]) != 0
    assert "bank-a is not a member of" in capsys.readouterr().err


def _expiring(consortium, tmp_path, job_id, seconds):
    """A job signed so that it expires `seconds` from now (valid 1 minute, signed 60 - seconds ago)."""
    import datetime as dt

    from fedsilo.peers.daemon.signed_job import job_document, sign_job

    path = consortium.job_toml(tmp_path / f"{job_id}.toml", job_id, extra="valid-for-minutes = 1")
    signed_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60 - seconds)
    return sign_job(consortium.identity(OWNER), job_document(path, OWNER, now=signed_at))


def _expire_test(consortium, monkeypatch, sweep_seconds, during):
    """Propose a job expiring in 2 s to bank-b, run `during(services)` 2.6 s later; bank-b's state before and after."""
    import asyncio

    import fedsilo.peers.daemon.roles.participating as participating_module

    monkeypatch.setattr(participating_module, "EXPIRY_SWEEP_SECONDS", sweep_seconds)

    async def body(envelope):
        async with running(consortium, ["bank-b"]) as services:
            assert (await propose(consortium, envelope))["decision"] == "accepted"
            before = state_of(consortium, "bank-b")
            await asyncio.sleep(2.6)
            outcome = await during(services)
            return before, outcome, state_of(consortium, "bank-b")

    return body


def _assert_expired(job_id, before, after, last_actions):
    assert (job_id, "accepted") in before[0] and (job_id, "reserved") in before[1]
    assert (job_id, "expired") in after[0]
    assert all(job != job_id for job, _ in after[1])  # the reservation is released: no ledger row left
    expired = [entry for entry in after[2] if entry[1] == "job.expired"]
    assert expired and "reservation released" in expired[-1][3]
    assert [entry[1] for entry in after[2][-len(last_actions) :]] == last_actions


def test_a_running_daemon_expires_a_participation_its_host_never_started(consortium, tmp_path, monkeypatch):
    async def nothing(services):
        return None

    before, _, after = run(
        _expire_test(consortium, monkeypatch, 0.5, nothing)(_expiring(consortium, tmp_path, "sweep-1", 2))
    )
    _assert_expired("sweep-1", before, after, ["budget.release", "job.expired"])


def test_a_start_after_the_job_expired_is_refused_and_releases_the_reservation(consortium, tmp_path, monkeypatch):
    async def late_start(services):
        async with member_client(consortium, "bank-a") as client:
            with pytest.raises(PeerUnreachable, match="409.*expired|expired.*409") as refused:
                await client.call(
                    "POST", f"{consortium.addresses['bank-b']}/v1/jobs/late-1/start", {"fleet_address": "127.0.0.1:1"}
                )
        return str(refused.value)

    before, refusal, after = run(
        _expire_test(consortium, monkeypatch, 3600, late_start)(_expiring(consortium, tmp_path, "late-1", 2))
    )
    _assert_expired("late-1", before, after, ["budget.release", "job.expired", "job.start"])
    assert after[2][-1][2] == "refused" and "expired" in after[2][-1][3]


def test_a_restarted_daemon_expires_participations_that_expired_while_it_was_down(consortium, tmp_path):
    import asyncio

    envelope = _expiring(consortium, tmp_path, "down-1", 2)

    async def body():
        async with running(consortium, ["bank-b"]):
            await propose(consortium, envelope)
            before = state_of(consortium, "bank-b")
        await asyncio.sleep(2.6)
        async with running(consortium, ["bank-b"]):
            return before, state_of(consortium, "bank-b")

    before, after = run(body())
    assert (
        ("down-1", "accepted") in before[0]
        and ("down-1", "expired") in after[0]
        and all(job != "down-1" for job, _ in after[1])
    )
    assert any(entry[1] == "job.expired" and "reservation released" in entry[3] for entry in after[2])


def test_a_restart_commits_a_reservation_a_job_left_after_its_supernode_joined(consortium, tmp_path):
    """The state an older daemon left when a job failed mid-training: the job final, its reservation
    still held. Restarted, the daemon commits it in full (updates may have left), and releases only a
    reservation whose job never reached this peer's SuperNode."""
    joined = signed(consortium, consortium.job_toml(tmp_path / "a.toml", "legacy-1"))
    never = signed(consortium, consortium.job_toml(tmp_path / "b.toml", "legacy-2"))
    state = consortium.root / "bank-b" / "state"

    async def body():
        async with running(consortium, ["bank-b"]):
            for envelope in (joined, never):
                assert (await propose(consortium, envelope))["decision"] == "accepted"
        with sqlite3.connect(state / "state.sqlite") as conn:
            conn.execute("UPDATE jobs SET state = 'failed' WHERE job_id IN ('legacy-1', 'legacy-2')")
        (state / "jobs" / "legacy-1" / "peer").mkdir(parents=True)
        async with running(consortium, ["bank-b"]):
            pass
        return state_of(consortium, "bank-b")

    _, ledger, audit = run(body())
    assert ("legacy-1", "committed") in ledger and all(job != "legacy-2" for job, _ in ledger)
    assert any(a[1] == "budget.commit" and "the whole reservation" in a[3] for a in audit)
    assert any(a[1] == "budget.release" and "left by a crash" in a[3] for a in audit)


def test_an_acceptance_without_its_fields_counts_as_no_answer_and_the_job_fails_cleanly(consortium, tmp_path):
    """A participant (bank-b) answers the host's proposal "accepted" but leaves out its plan and node key.

    The host must not count it as accepted (it could not start the SuperLink for it): bank-b
    is recorded as unreachable, the job fails for lack of participants, and the host's
    reservation goes back.
    """
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "hollow-1"))
    host = consortium.addresses["bank-a"]

    async def hollow_accept(caller, envelope):
        return {"decision": "accepted", "peer": "bank-b"}

    async def body():
        async with running(consortium) as services:
            services["bank-b"].participating.propose = hollow_accept
            async with member_client(consortium, OWNER) as owner:
                await owner.call("POST", f"{host}/v1/jobs", envelope)
                for _ in range(300):
                    view = await owner.call("GET", f"{host}/v1/jobs/hollow-1")
                    if view["state"] != "proposing":
                        break
                    await asyncio.sleep(0.1)
        return view

    view = run(body())
    assert view["state"] == "failed" and "only 1 of 2 participants accepted" in view["detail"], view
    (refused,) = [p for p in view["participants"] if p["peer"] == "bank-b"]
    assert refused["decision"] == "unreachable" and "acceptance that is not one" in refused["reason"]
    assert "the record's 'rows' is missing" in refused["reason"]  # the first field it lacks, by name
    _, ledger, audit = state_of(consortium, "bank-a")
    assert "hollow-1" not in dict(ledger)  # the host's own reservation was released
    assert ("bank-b", "job.unreachable", "ok", refused["reason"]) in audit
