"""A bounded, seeded fuzzer over every route of a real daemon: no server error, every refusal audited.

bank-a's daemon runs in-process with real mutual TLS, holding a list other peers may
query, a job it takes part in (hosted by bank-b) and a job it hosts. Five callers
(bank-a itself, the peer bank-b, the model owner, a peer that is not in the job,
and a certificate the CA signed that is not in bank-a's manifest) send malformed
requests to every route the app's router lists, so a route added later is fuzzed
too: bodies nested thousands deep, NaN/Infinity/10**400, wrong types, oversized
and binary bodies, bad query parameters, unknown ids, path tricks, wrong methods and
unknown routes. The daemon must answer each with a status below 500, write an audit
entry for each refusal (the caller's name, or "unknown"), and keep an audit chain that
verifies.
"""

import json
import random
import sqlite3

import aiohttp
import pytest
from yarl import URL

from fedsilo.peers.daemon.app import start_daemon
from fedsilo.peers.daemon.config import load_config
from fedsilo.peers.daemon.participants import Acceptance, Report
from fedsilo.peers.errors import Refused
from fedsilo.peers.identity.consortium import admit, init_peer
from fedsilo.peers.identity.tls import client_context
from fedsilo.privacy.accounting import Mechanism

from ._consortium import OWNER, make_consortium, run, signed

SEED = 15
PER_ROUTE_AND_CALLER = 12
LIST_TOML = """
[lists.high-risk]
path = "high-risk.csv"
id-column = "client"
label-column = "grade"
kind = "client"
psi = ["bank-b"]
psi-quota = 1000
queriers = { bank-b = 5 }

[limits]  # the fuzzer tests input handling, not rate limits (test_rate_limit): no 429 in its way
read-rate = 1000.0
read-burst = 1000
write-rate = 1000.0
write-burst = 1000
"""


def _nested(depth: int) -> bytes:
    return b'{"job": ' * depth + b"1" + b"}" * depth


BODIES: list[bytes] = [
    b"",
    b"{",
    b"null",
    b"[]",
    b"{}",
    b'"text"',
    b"1e400",
    b"NaN",
    b"-Infinity",
    b"\xff\xfe\x00",
    b"[" * 100_000 + b"]" * 100_000,
    _nested(1000),
    _nested(40),
    b'{"a": [' * 30 + b"]}" * 30,
    b"1" + b"0" * 400,
    b"1" + b"0" * 5000,
    json.dumps({"spent": [], "epsilon": "0.5", "delta": 1e-5}).encode(),
    b'{"spent": [], "epsilon": 1e400, "delta": 1e-5}',
    b'{"spent": [], "epsilon": NaN, "delta": 1e-5}',
    b'{"spent": [], "epsilon": 1' + b"0" * 400 + b', "delta": 1e-5}',
    json.dumps(
        {
            "spent": [{"noise_multiplier": 1.0, "sample_rate": 0.5, "steps": 10**17}],
            "epsilon": 99,
            "delta": 1e-5,
            "accountant": ["rdp"],
        }
    ).encode(),
    json.dumps({"spent": "all", "epsilon": True, "delta": None, "failed": {"x": 1}}).encode(),
    json.dumps({"job": {"job_id": ["x"], "run_config": 5}, "signature": 1, "certificate": []}).encode(),
    json.dumps({"job": "x" * 5000, "signature": None, "certificate": None}).encode(),
    json.dumps({"fleet_address": 12}).encode(),
    json.dumps({"fleet_address": ["127.0.0.1:1"]}).encode(),
    json.dumps(
        {"action": "psi.run", "peer": "bank-b", "list": "high-risk", "outcome": "ok", "sent": -1, "learned": 2**70}
    ).encode(),
    json.dumps({"action": 5, "peer": None, "list": [], "outcome": {}, "sent": "1", "learned": 1.5}).encode(),
    json.dumps({"since": -1, "job_id": "../../etc/passwd"}).encode(),
]
JOB_IDS = [
    "fuzz-1",
    "fuzz-host",
    "nope",
    "..%2F..%2Fstate.sqlite",
    "%00",
    "a" * 300,
    "%F0%9F%92%A9",
    "%2e%2e",
    "model_card.json",
    "fuzz-1%20",
    "-1",
]
NAMES = ["high-risk", "model_card.json", "..%2Fstate.sqlite", "nope", "%00", "x" * 300, ".", "a%2Fb"]
UNKNOWN_PATHS = [
    "/",
    "/v1",
    "/v2/health",
    "/v1/nope",
    "/v1/jobs/fuzz-1/x/y",
    "/v1/../v1/health",
    "/v1/jobs//cancel",
    "/v1/models/fuzz-1/files/",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/v1/lists/high-risk/psi/confirm/more",
]
QUERIES = [
    "",
    "?since=-1",
    "?since=abc",
    "?since=1e400",
    "?since=" + "9" * 30,
    "?since=%C2%B2",
    "?since=NaN",
    "?since=",
    "?since=0&since=1",
    "?since=3",
    "?limit=99999999999999999999&x=%00",
]


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    consortium = make_consortium(root, peers=("bank-a", "bank-b"), rows=80, extra_members=(("bank-c", "peer"),))
    (root / "bank-a" / "high-risk.csv").write_text("client,grade\n" + "".join(f"C-{i},A\n" for i in range(20)))
    with open(consortium.config_path("bank-a"), "a") as handle:
        handle.write(LIST_TOML)
    request = init_peer(root / "stranger", "stranger")  # the CA signed it, bank-a's manifest predates it
    admit(root / "consortium", request, ("peer",), "https://127.0.0.1:1", root / "stranger" / "peer.pem")
    return consortium


def _credentials(consortium, name):
    if name == "stranger":
        return consortium.root / "stranger" / "peer.pem", consortium.root / "stranger" / "peer.key"
    identity = consortium.identity(name)
    return identity.cert_path, identity.key_path


def _requests(routes, rng):
    """The seeded request list: (caller, method, path, body, content type)."""
    callers = ["bank-a", "bank-b", OWNER, "bank-c", "stranger"]
    out = []
    for method, template in routes:
        for caller in callers:
            count = 3 if caller == "stranger" else PER_ROUTE_AND_CALLER
            for index in range(count):
                path = template.replace("{job_id}", rng.choice(JOB_IDS)).replace("{name}", rng.choice(NAMES))
                path += rng.choice(QUERIES)
                body = BODIES[index % len(BODIES)] if caller == "bank-b" else rng.choice(BODIES)
                if rng.random() < 0.1:
                    body = rng.randbytes(rng.randrange(1, 4096))
                kind = rng.choice(["application/json", "application/octet-stream"])
                out.append((caller, method, path, body if method == "POST" or rng.random() < 0.2 else b"", kind))
        out.append(
            (
                "bank-b",
                method,
                template.replace("{job_id}", "fuzz-1").replace("{name}", "high-risk"),
                b" " * (2 << 20),
                "application/json",
            )
        )  # over the 1 MiB body limit
        for wrong in {"GET", "POST", "DELETE", "PUT"} - {method}:  # 405, audited
            out.append(
                (
                    rng.choice(callers[:4]),
                    wrong,
                    template.replace("{job_id}", "fuzz-1").replace("{name}", "high-risk"),
                    b"{}",
                    "application/json",
                )
            )
    for path in UNKNOWN_PATHS:  # 404, audited
        out.extend((caller, rng.choice(["GET", "POST"]), path, b"{}", "application/json") for caller in callers)
    rng.shuffle(out)
    return out


def test_every_route_refuses_malformed_requests_without_a_server_error(consortium, tmp_path):
    audit_db = consortium.root / "bank-a" / "state" / "state.sqlite"

    async def body():
        runner, service, _ = await start_daemon(load_config(consortium.config_path("bank-a")))
        try:
            routes = sorted({(r.method, r.resource.canonical) for r in runner.app.router.routes()})
            assert len(routes) >= 23
            base = consortium.addresses["bank-a"]
            # a job bank-a takes part in (bank-b hosts), and one it hosts
            sessions = {}
            for caller in ["bank-a", "bank-b", OWNER, "bank-c", "stranger"]:
                context = client_context(
                    consortium.identity_dir("bank-a") / "ca.pem", *_credentials(consortium, caller)
                )
                sessions[caller] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
            try:
                envelope = signed(
                    consortium,
                    consortium.job_toml(
                        tmp_path / "p.toml", "fuzz-1", host="bank-b", participants=["bank-b", "bank-a"]
                    ),
                )
                async with sessions["bank-b"].post(f"{base}/v1/proposals", json=envelope) as reply:
                    assert (await reply.json())["decision"] == "accepted"
                hosted = signed(
                    consortium,
                    consortium.job_toml(
                        tmp_path / "h.toml", "fuzz-host", host="bank-a", participants=["bank-a", "bank-b"]
                    ),
                )
                async with sessions[OWNER].post(f"{base}/v1/jobs", json=hosted) as reply:
                    assert reply.status == 201

                errors, unaudited, statuses = [], [], {}
                audit = sqlite3.connect(audit_db)
                plan = _requests(routes, random.Random(SEED))
                for caller, method, path, data, kind in plan:
                    before = audit.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()[0]
                    url = URL(base + path, encoded=True)
                    async with sessions[caller].request(
                        method, url, data=data, headers={"Content-Type": kind}
                    ) as reply:
                        text = await reply.text(errors="replace")
                        status = reply.status
                    statuses[status] = statuses.get(status, 0) + 1
                    if status >= 500:
                        errors.append((caller, method, path[:80], data[:60], status, text[:300]))
                    elif status >= 400:
                        actor = "unknown" if caller == "stranger" else caller
                        new = audit.execute(
                            "SELECT 1 FROM audit WHERE seq > ? AND actor = ? AND outcome = 'refused'", (before, actor)
                        ).fetchall()
                        if not new:
                            unaudited.append((caller, method, path[:80], data[:60], status, text[:200]))
                audit.close()
                check = service.store.audit.verify()  # the export route is the operator's (admin socket)
                exported = {"chain_ok": check.ok, "first_broken": check.first_broken}
            finally:
                for session in sessions.values():
                    await session.close()
            ledger = service.ledger.jobs("credit-card")
            active = {job.job_id for job in service.store.jobs(("proposing", "accepted", "ready", "training"))}
        finally:
            await runner.cleanup()
        return plan, errors, unaudited, statuses, exported, ledger, active

    plan, errors, unaudited, statuses, exported, ledger, active = run(body())
    assert len(plan) > 1200
    assert errors == [], f"{len(errors)} server errors, e.g. {errors[:3]}"
    assert unaudited == [], f"{len(unaudited)} refusals without an audit entry, e.g. {unaudited[:3]}"
    assert (
        statuses.get(400, 0) > 200
        and statuses.get(403, 0) > 50
        and statuses.get(413, 0) >= 10
        and statuses.get(404, 0) > 50
        and statuses.get(405, 0) >= 60
    ), statuses
    assert exported["chain_ok"] is True and exported["first_broken"] is None
    assert {job_id for job_id, record in ledger.items() if record.state == "reserved"} <= active

    from fedsilo.cli import main

    assert main(["audit", "verify", "--config", str(consortium.config_path("bank-a"))]) == 0


# what a participant replied when it accepted
ACCEPTED = Acceptance("bank-b", 500, 400, "sha256", (Mechanism(1.2, 0.25, 40),), 1e-5, "rdp", "key")


PLANNED = {"noise_multiplier": 1.2, "sample_rate": 0.25}


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "text",
        {},
        {"spent": [], "epsilon": "0.5", "delta": 1e-5},
        {"spent": "all", "epsilon": True, "delta": None, "failed": {"x": 1}},
        {"spent": [], "epsilon": float("nan"), "delta": 1e-5},
        {"spent": [], "epsilon": float("inf"), "delta": 1e-5},
        {"spent": [], "epsilon": 10**400, "delta": 1e-5},
        {"spent": [], "epsilon": -0.1, "delta": 1e-5},
        {"spent": [], "epsilon": 0.0, "delta": 1e-5, "extra": 1},
        {"spent": [], "epsilon": 0.0, "delta": 1e-3},
        {"spent": [], "epsilon": 0.0, "delta": 1e-5, "accountant": "prv"},
        {"spent": [], "epsilon": 0.0, "delta": 1e-5, "failed": "x" * 2001},
        {"spent": [{**PLANNED, "steps": 41}], "epsilon": 1.0, "delta": 1e-5},  # more steps than planned
        {"spent": [{**PLANNED, "steps": 10**17}], "epsilon": 99, "delta": 1e-5},
        {"spent": [{"noise_multiplier": 0.3, "sample_rate": 0.25, "steps": 4}], "epsilon": 1.0, "delta": 1e-5},
        {"spent": [{**PLANNED, "steps": 4}], "epsilon": 0.0, "delta": 1e-5},  # ε below what its mechanisms cost
        {"spent": [{**PLANNED, "steps": float("nan")}], "epsilon": 0.0, "delta": 1e-5},
    ],
)
def test_a_report_outside_the_participants_plan_is_refused(payload):
    """Every malformed or out-of-plan report is a Refused 400, never another exception."""
    with pytest.raises(Refused) as refused:
        Report.checked(payload, ACCEPTED)
    assert refused.value.status == 400


def test_a_report_within_the_plan_is_kept_as_sent():
    from fedsilo.privacy.accounting import epsilon_spent

    spent = [{**PLANNED, "steps": 20}]
    epsilon = epsilon_spent([Mechanism.from_dict(spent[0])], 1e-5, "rdp")
    report = Report.checked(
        {"spent": spent, "epsilon": epsilon, "delta": 1e-5, "accountant": "rdp", "failed": None}, ACCEPTED
    )
    assert report.to_json() == {"spent": spent, "epsilon": epsilon, "delta": 1e-5, "accountant": "rdp", "failed": None}
