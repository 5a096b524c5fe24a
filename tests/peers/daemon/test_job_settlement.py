"""Spent means spent, and a participant's report cannot wedge a job (issue 15, item 3).

Real daemons in-process on 127.0.0.1 (real mutual TLS), training on Flower's Deployment
Engine in real processes. The host's ServerApp is killed mid-job: the host fails the job
and never spends less than its own accountant recorded (its whole reservation when it
settles first, what its SuperNode's durable record holds when that node settles first, a
release only when that record is empty), no reservation is left held, and a restart keeps
what was committed. A participant
(bank-b, playing the attacker with the job, its own acceptance and the host's address)
sends reports with ε NaN, infinite, 10**400, a string, or above its plan: each is
refused with a 400 and audited, and the job still publishes its model, or is cancelled
by its owner; a report after the job ended is refused (409).
"""

import asyncio
import json
import os
import signal
import sqlite3

import pytest

from fedsilo.peers.daemon.training import spent_so_far
from fedsilo.peers.deployment.processes import REGISTRY_NAME
from fedsilo.peers.errors import PeerUnreachable
from fedsilo.privacy.accounting import epsilon_spent

from ._consortium import OWNER, make_consortium, member_client, run, running, signed

pytestmark = pytest.mark.slow


async def wait_state(client, url, states, timeout=300.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await client.call("GET", url)
        if view["state"] in states:
            return view
        assert asyncio.get_running_loop().time() < deadline, view
        await asyncio.sleep(0.5)


def ledger_rows(consortium, name):
    with sqlite3.connect(consortium.root / name / "state" / "ledger.sqlite") as conn:
        return {
            job: (state, json.loads(mechanisms))
            for job, state, mechanisms in conn.execute("SELECT job_id, state, mechanisms FROM jobs")
        }


def audit(consortium, name):
    with sqlite3.connect(consortium.root / name / "state" / "state.sqlite") as conn:
        return conn.execute("SELECT actor, action, outcome, detail FROM audit ORDER BY seq").fetchall()


BAD_REPORTS = [
    ({"spent": [], "epsilon": float("nan"), "delta": 1e-5, "accountant": "prv"}, "finite"),
    ({"spent": [], "epsilon": float("inf"), "delta": 1e-5, "accountant": "prv"}, "only finite numbers"),
    ({"spent": [], "epsilon": 10**400, "delta": 1e-5, "accountant": "prv"}, "at most 18 are accepted"),
    ({"spent": [], "epsilon": "0.5", "delta": 1e-5, "accountant": "prv"}, "must be a number"),
]


async def attack_with_reports(client, url, planned):
    """bank-b's bad reports (and one above its plan): each must be refused with a 400."""
    over_plan = {
        "spent": [{**planned, "steps": planned["steps"] * 2}],
        "epsilon": 99.0,
        "delta": 1e-5,
        "accountant": "prv",
    }
    refusals = []
    for report, fragment in [*BAD_REPORTS, (over_plan, "not within the participant's plan")]:
        with pytest.raises(PeerUnreachable) as refused:
            await client.call("POST", url, report)
        assert "answered 400" in str(refused.value) and fragment in str(refused.value), str(refused.value)
        refusals.append(str(refused.value))
    return refusals


def test_a_host_whose_training_fails_commits_its_reservation_and_a_restart_keeps_it(tmp_path):
    consortium = make_consortium(tmp_path, peers=("bank-a", "bank-b"), rows=300)
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "fail-1", rounds=30, epsilon=1.0))
    host = consortium.addresses["bank-a"]

    async def body():
        async with running(consortium):
            async with member_client(consortium, OWNER) as owner:
                await owner.call("POST", f"{host}/v1/jobs", envelope)
                await wait_state(owner, f"{host}/v1/jobs/fail-1", ("training",))
                reserved = (await owner.call("GET", f"{host}/v1/budget"))["sources"][0]
                registry = consortium.root / "bank-a" / "state" / "jobs" / "fail-1" / "host" / "logs" / REGISTRY_NAME
                for _ in range(120):
                    entries = json.loads(registry.read_text()) if registry.exists() else []
                    if any(e["name"] == "superexec" for e in entries):
                        break
                    await asyncio.sleep(0.5)
                os.killpg(next(e["pgid"] for e in entries if e["name"] == "superexec"), signal.SIGKILL)
                failed = await wait_state(owner, f"{host}/v1/jobs/fail-1", ("failed", "finished"), timeout=120)
                after = (await owner.call("GET", f"{host}/v1/budget"))["sources"][0]
                participant = await wait_state(
                    owner,
                    f"{consortium.addresses['bank-b']}/v1/jobs/fail-1",
                    ("cancelled", "failed", "finished"),
                    timeout=120,
                )
        rows = ledger_rows(consortium, "bank-a")
        async with running(consortium, ["bank-a"]):
            async with member_client(consortium, OWNER) as owner:
                restarted = (await owner.call("GET", f"{host}/v1/budget"))["sources"][0]
        return reserved, failed, after, participant, rows, restarted

    reserved, failed, after, participant, rows, restarted = run(body())
    planned_epsilon = reserved["reserved_epsilon"]
    assert reserved["spent_epsilon"] == 0 and 0.5 < planned_epsilon <= 1.0
    assert failed["state"] == "failed" and "training failed" in failed["detail"]
    # Who settles first is a race: the host's failure handling (the whole reservation, since its
    # own data may have left in an update) or its own SuperNode's end (what its accountant's
    # durable record holds). Either way it never spends less than that record, and holds nothing.
    recorded = spent_so_far(consortium.root / "bank-a" / "state", "fail-1")
    entries = audit(consortium, "bank-a")
    assert after["reserved_epsilon"] == 0
    assert any(a == "job.failed" for _, a, _, _ in entries)
    if "fail-1" in rows:
        state, mechanisms = rows["fail-1"]
        assert state == "committed" and failed["spent"] == mechanisms and mechanisms
        assert after["spent_epsilon"] >= epsilon_spent(recorded, 1e-5, "prv") - 1e-9
        assert after["spent_epsilon"] <= planned_epsilon * (1 + 1e-9)
        assert any(a == "budget.commit" for _, a, _, _ in entries)
        assert not any(a == "budget.release" for _, a, _, _ in entries)
    else:  # released: only when nothing of bank-a's data had left
        assert recorded == [] and after["spent_epsilon"] == 0
        assert any(a == "budget.release" for _, a, _, _ in entries)
    assert restarted["spent_epsilon"] == pytest.approx(after["spent_epsilon"], rel=1e-9, abs=1e-12)
    assert restarted["remaining_epsilon"] == pytest.approx(8.0 - after["spent_epsilon"], rel=1e-9)
    # the participant was told and settled what its own accountant recorded
    assert participant["state"] in ("cancelled", "failed")
    assert ("fail-1" in ledger_rows(consortium, "bank-b")) == bool(participant["spent"])


def test_bad_and_late_reports_are_refused_and_the_job_still_publishes(tmp_path):
    consortium = make_consortium(tmp_path, peers=("bank-a", "bank-b"), rows=300)
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "rep-1", rounds=2, epsilon=1.0))
    host = consortium.addresses["bank-a"]
    report_url = f"{host}/v1/jobs/rep-1/report"

    async def body():
        async with running(consortium) as services:
            async with member_client(consortium, OWNER) as owner, member_client(consortium, "bank-b") as attacker:
                await owner.call("POST", f"{host}/v1/jobs", envelope)
                await wait_state(owner, f"{host}/v1/jobs/rep-1", ("training",))
                accepted = services["bank-a"].store.participant("rep-1", "bank-b").acceptance
                refusals = await attack_with_reports(attacker, report_url, accepted.planned[0].to_dict())
                finished = await wait_state(owner, f"{host}/v1/jobs/rep-1", ("finished", "failed"))
                card = await owner.call("GET", f"{host}/v1/models/rep-1/card")
                late = []
                for report in ({"spent": [], "epsilon": 99.0, "delta": 1e-5}, card["participants"][1]):
                    with pytest.raises(PeerUnreachable) as refused:
                        await attacker.call("POST", report_url, {k: report[k] for k in ("spent", "epsilon", "delta")})
                    late.append(str(refused.value))
                card_after = await owner.call("GET", f"{host}/v1/models/rep-1/card")
        return refusals, finished, card, late, card_after

    refusals, finished, card, late, card_after = run(body())
    assert finished["state"] == "finished", finished["detail"]
    assert [p["peer"] for p in card["participants"]] == ["bank-a", "bank-b"]
    for participant in card["participants"]:  # the genuine reports, not the attacker's
        assert participant["reported"] and 0.5 < participant["epsilon"] <= 1.0
    assert all("409" in message and "accepted only while it trains" in message for message in late)
    assert card_after == card
    models = consortium.root / "bank-a" / "state" / "models" / "rep-1"
    assert sorted(p.name for p in models.iterdir()) == ["v1"]  # no .partial left behind
    refused = [
        d
        for actor, action, outcome, d in audit(consortium, "bank-a")
        if actor == "bank-b" and action in ("job.report", "POST /v1/jobs/rep-1/report") and outcome == "refused"
    ]
    assert len(refused) == len(refusals) + len(late)


def test_a_job_cancels_normally_after_a_nan_report(tmp_path):
    consortium = make_consortium(tmp_path, peers=("bank-a", "bank-b"), rows=300)
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "nan-1", rounds=30, epsilon=1.0))
    host = consortium.addresses["bank-a"]

    async def body():
        async with running(consortium):
            async with member_client(consortium, OWNER) as owner, member_client(consortium, "bank-b") as attacker:
                await owner.call("POST", f"{host}/v1/jobs", envelope)
                await wait_state(owner, f"{host}/v1/jobs/nan-1", ("training",))
                with pytest.raises(PeerUnreachable, match="answered 400"):
                    await attacker.call("POST", f"{host}/v1/jobs/nan-1/report", BAD_REPORTS[0][0])
                cancelled = await owner.call("POST", f"{host}/v1/jobs/nan-1/cancel", {})
        return cancelled

    cancelled = run(body())
    assert cancelled["state"] == "cancelled"
    rows = ledger_rows(consortium, "bank-a")
    assert "nan-1" not in rows or rows["nan-1"][0] == "committed"  # settled either way: nothing left reserved
