"""Transfer jobs in the signed job and at a peer's door (fast: one in-process daemon, no training).

The owner's signature covers the shared vocabulary, the shared parameters and the
shared-customers declaration; parsing refuses a transfer job that states either list
badly, and any other setup that states them. bank-b accepts a transfer job by reserving
DP-SGD's plan on its own training rows, and declines, with nothing reserved, one with
shared customers when it lacks the list the earlier participant's PSI needs, one with
distributed DP and one whose vocabulary its table does not hold.
"""

import asyncio
import base64
import copy
import re

import numpy as np
import pytest

from fedsilo.errors import ConfigError, DataError
from fedsilo.peers.alignment import aligned_rows
from fedsilo.peers.daemon.client import both_sides_list_kind
from fedsilo.peers.daemon.config import load_config
from fedsilo.peers.daemon.signed_job import job_document
from fedsilo.peers.daemon.training import store_agreed_sides, working_table
from fedsilo.peers.data.bank import TEST, TRAIN, read_table, split_rows
from fedsilo.peers.errors import PeerUnreachable, Refused
from fedsilo.peers.job import plan_dp
from fedsilo.peers.risk_lists import dh_psi
from fedsilo.peers.shared_holdout import pin_frame
from fedsilo.privacy.accounting import Mechanism, epsilon_spent
from fedsilo.privacy.ledger import SQLiteLedger

from ._consortium import OWNER, make_consortium, member_client, run, running
from .test_daemon_refusals import propose, refused_without_change, state_of
from .test_job_setups import ALLOW_ALL, TRANSFER, _envelope, _job_file, _verify

PAIR = ("bank-a", "bank-b")


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("transfer-jobs"), peers=PAIR)


def test_a_transfer_job_states_its_shared_set_in_the_signed_document(consortium, tmp_path):
    envelope = _envelope(consortium, tmp_path / "job.toml", "tl-sig", TRANSFER + "\nshared-customers = false")
    job = _verify(consortium, envelope)
    assert job.setup == "transfer" and not job.shared_customers
    assert job.config.shared == ("shared_input", "head") and job.config.vocabulary == ("limit", "age")
    assert envelope["job"]["run_config"]["model.shared"] == "shared_input,head"
    assert envelope["job"]["run_config"]["model.shared-vocabulary"] == "limit,age"
    assert envelope["job"]["shared_customers"] is False


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["run_config"].__setitem__("model.shared", "shared_input,head,input"),  # a private block shared
        lambda d: d["run_config"].__setitem__("model.shared", "shared_input"),
        lambda d: d["run_config"].__setitem__("model.shared-vocabulary", "limit,age,x1"),  # an own column shared
        lambda d: d.__setitem__("shared_customers", True),
    ],
)
def test_a_changed_shared_set_breaks_the_owners_signature(consortium, tmp_path, tamper):
    envelope = _envelope(consortium, tmp_path / "job.toml", "tl-tamper", TRANSFER)
    altered = copy.deepcopy(envelope)
    tamper(altered["job"])
    with pytest.raises(Refused, match="signature"):
        _verify(consortium, altered)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ('setup = "transfer"\nmodel-shared = ["head"]', "a transfer job must state model.shared-vocabulary"),
        ('setup = "transfer"\nmodel-shared-vocabulary = ["limit"]', "a transfer job must state model.shared:"),
        (
            'setup = "transfer"\nmodel-shared = ["input"]\nmodel-shared-vocabulary = ["limit"]',
            "covers input.weight: the own-columns block of each institution stays private",
        ),
        (
            'setup = "transfer"\nmodel-shared = ["trunk"]\nmodel-shared-vocabulary = ["limit"]',
            "model.shared names 'trunk', which is no parameter of the model",
        ),
        (
            'setup = "transfer"\nmodel-shared = ["head"]\nmodel-shared-vocabulary = ["limit", "Y"]',
            "must list distinct columns, not the label 'Y'",
        ),
        (
            'setup = "transfer"\nmodel-shared = ["head"]\nmodel-shared-vocabulary = "limit"',
            "model.shared-vocabulary in",
        ),
        (
            'setup = "transfer"\nmodel-shared = ["head"]\nmodel-shared-vocabulary = ["a,b"]',
            "list of non-empty names without commas",
        ),
        (TRANSFER + '\nshared-customers = "yes"', "job.shared-customers must be true or false"),
        (TRANSFER + '\nmodel-kind = "logreg"', "a transfer job trains model kind mlp"),
        ('model-shared = ["head"]', "model.shared belong to transfer jobs only; this job's setup is horizontal"),
        ("shared-customers = true", "job.shared-customers belong to transfer jobs only"),
    ],
)
def test_a_badly_stated_transfer_job_is_refused_before_signing(consortium, tmp_path, extra, fragment):
    path = _job_file(consortium, tmp_path / "job.toml", "tl-bad", extra)
    if "model-kind" in extra:
        path.write_text(path.read_text().replace('kind = "mlp"\n', ""))
    with pytest.raises(ConfigError) as raised:
        job_document(path, OWNER)
    assert fragment in str(raised.value)


def test_a_transfer_job_reserves_dp_sgds_plan_on_the_peers_own_training_rows(consortium, tmp_path):
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL)
    envelope = _envelope(consortium, tmp_path / "job.toml", "tl-accept", TRANSFER)
    job = _verify(consortium, envelope)
    table = read_table(consortium.root / "bank-b" / "data.csv")
    n_train = len(split_rows(table, "Y", job.config.train.test_fraction, job.config.train.seed)[0])
    plan = plan_dp(job.config, n_train).whole_job

    async def body():
        async with running(consortium, ["bank-b"]):
            return await propose(consortium, envelope)

    try:
        reply = run(body())
    finally:
        consortium.write_peer_toml("bank-b")
    assert reply["decision"] == "accepted" and reply["n_train"] == n_train
    assert [Mechanism.from_dict(m) for m in reply["planned"]] == [plan]
    jobs, ledger, _ = state_of(consortium, "bank-b")
    assert ("tl-accept", "accepted") in jobs and ("tl-accept", "reserved") in ledger
    assert 0.9 < epsilon_spent([plan], 1e-5, "prv") <= 1.0 + 1e-9  # the job's ε = 1, on bank-b's own rows


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (
            TRANSFER + "\nshared-customers = true",  # bank-b, after bank-a, has no list for bank-a's PSI
            "aligns them through the list named like the source, [lists.credit-card], of every participant after "
            "the first in name order: it has no such list",
        ),
        (
            'setup = "transfer"\nmodel-shared = ["head"]\nmodel-shared-vocabulary = ["age", "income"]',
            "data source credit-card holds none of the transfer job's shared-vocabulary columns (age, income)",
        ),
    ],
)
def test_a_transfer_job_this_peer_cannot_run_is_declined_with_nothing_reserved(consortium, tmp_path, extra, fragment):
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL)
    envelope = _envelope(consortium, tmp_path / "job.toml", f"tl-no-{abs(hash(fragment)) % 10**6}", extra)
    try:
        reply, entry = refused_without_change(consortium, lambda: propose(consortium, envelope), fragment)
    finally:
        consortium.write_peer_toml("bank-b")
    assert reply["decision"] == "declined" and fragment in reply["reason"] and entry[1] == "job.decline"


def test_forged_pins_and_a_holdout_asked_by_anyone_but_the_host_are_refused(consortium, tmp_path):
    """An attacker's side of the shared customers' split at bank-b (after bank-a in name order): bank-a
    sends pins with no PSI run behind them, the owner asks bank-b to split; both refused, audited, and
    bank-b has no agreed split."""
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL)
    with open(consortium.config_path("bank-b"), "a") as handle:  # the list bank-a's PSI would run on
        handle.write(
            '\n[lists.credit-card]\npath = "data.csv"\nid-column = "ID"\npsi = ["bank-a"]\npsi-modes = ["both"]\n'
            'psi-protocols = ["dh"]\npsi-quota = 100000\n'
        )
    envelope = _envelope(consortium, tmp_path / "job.toml", "tl-forged", TRANSFER + "\nshared-customers = true")
    frame = base64.b64encode(pin_frame(np.zeros(3, dtype=np.int8))).decode()

    async def attempt():
        async with running(consortium, ["bank-b"]):
            assert (await propose(consortium, envelope))["decision"] == "accepted"
            url = f"{consortium.addresses['bank-b']}/v1/jobs/tl-forged/transfer"
            async with member_client(consortium, "bank-a") as client:
                with pytest.raises(
                    PeerUnreachable,
                    match="answered 409: bank-a's pins for job tl-forged: no confirmed both-sides PSI of bank-a",
                ):
                    await client.call("POST", f"{url}/pins", {"session": "00" * 16, "frame": frame})
            async with member_client(consortium, OWNER) as client:
                with pytest.raises(PeerUnreachable, match="answered 403: only job tl-forged's host bank-a"):
                    await client.call("POST", f"{url}/holdout", {"order": ["bank-a", "bank-b"]})

    try:
        run(attempt())
    finally:
        consortium.write_peer_toml("bank-b")
    _, _, audit = state_of(consortium, "bank-b")
    assert ("bank-a", "transfer.pins", "refused") in [entry[:3] for entry in audit]
    assert (OWNER, "transfer.holdout", "refused") in [entry[:3] for entry in audit]
    assert not (consortium.root / "bank-b" / "state" / "jobs" / "tl-forged" / "agreed-sides.npy").exists()


SHARED_LIST = (
    '\n[lists.credit-card]\npath = "data.csv"\nid-column = "ID"\npsi = ["bank-a"]\npsi-modes = ["both"]\n'
    'psi-protocols = ["dh"]\npsi-quota = 100000\n'
)


async def _pin_then_split(consortium, job_id, test_count):
    """bank-a's part before bank-b's step, played by the test with bank-a's identity: the both-sides PSI of
    bank-a's ids with bank-b's list, pins putting the first `test_count` shared customers (in the pair's order)
    on the test side and the rest on the training side, then, as the job's host, bank-b's step; its reply."""
    url = consortium.addresses["bank-b"]
    ids = read_table(consortium.root / "bank-a" / "data.csv")["ID"].astype(str).tolist()
    async with member_client(consortium, "bank-a") as client:
        kind = await both_sides_list_kind(client, url, "bank-b", "credit-card")
        result, session = await dh_psi(client, url, "credit-card", ids, kind, "both")
        shared = len(aligned_rows(result))
        sides = np.where(np.arange(shared) < test_count, TEST, TRAIN).astype(np.int8)
        pins = {"session": session.hex(), "frame": base64.b64encode(pin_frame(sides)).decode()}
        await client.call("POST", f"{url}/v1/jobs/{job_id}/transfer/pins", pins)
        return shared, await client.call("POST", f"{url}/v1/jobs/{job_id}/transfer/holdout", {"order": sorted(PAIR)})


def _reservation(consortium, name, job_id):
    ledger = SQLiteLedger(consortium.root / name / "state" / "ledger.sqlite")
    try:
        return ledger.jobs("credit-card").get(job_id)
    finally:
        ledger.close()


def test_the_agreed_split_replaces_the_reservation_by_the_mechanism_the_node_trains(consortium, tmp_path):
    """The agreement pins 200 of bank-b's 400 rows to the test side (its own split held out 80): it trains
    on 200 rows, not 320. Its reservation must then be DP-SGD's plan on exactly the rows its SuperNode's
    ClientApp splits out of the table it is given (steps, sample rate, noise), not the plan it accepted
    with, and the host is told that plan (the report is checked against it)."""
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL)
    with open(consortium.config_path("bank-b"), "a") as handle:
        handle.write(SHARED_LIST)
    envelope = _envelope(consortium, tmp_path / "job.toml", "tl-replan", TRANSFER + "\nshared-customers = true")
    job = _verify(consortium, envelope)

    async def body():
        async with running(consortium, ["bank-b"]):
            accepted = await propose(consortium, envelope)
            before = _reservation(consortium, "bank-b", "tl-replan")
            return accepted, before, *(await _pin_then_split(consortium, "tl-replan", 200))

    try:
        accepted, before, shared, reply = run(body())
    finally:
        consortium.write_peer_toml("bank-b")
    assert accepted["decision"] == "accepted" and accepted["n_train"] == 320 and shared == 400
    assert before.mechanisms == tuple(Mechanism.from_dict(m) for m in accepted["planned"])
    # what bank-b's SuperNode trains: its ClientApp's split of the table the daemon hands it
    config = load_config(consortium.config_path("bank-b"))
    table = read_table(working_table(job.config, config.state_dir, config.sources["credit-card"]))
    n_node = len(split_rows(table, "Y", job.config.train.test_fraction, job.config.train.seed)[0])
    trained = plan_dp(job.config, n_node).whole_job
    after = _reservation(consortium, "bank-b", "tl-replan")
    assert n_node == 200 and after.state == "reserved" and after.mechanisms == (trained,)
    assert reply["n_train"] == 200
    assert [Mechanism.from_dict(m) for m in reply["planned"]] == [trained]
    old = before.mechanisms[0]
    assert (old.steps, old.sample_rate) != (trained.steps, trained.sample_rate)  # the accepted plan is not it
    _, _, audit = state_of(consortium, "bank-b")
    assert [entry[1] for entry in audit if entry[1].startswith("budget.")][-2:] == ["budget.reserve", "budget.replan"]


def test_pins_that_leave_no_training_row_make_the_peer_decline_with_its_reservation_released(consortium, tmp_path):
    """A malicious earlier participant pins every shared customer to the test side: bank-b has no row to
    train on, so no plan; it declines the job, releases its reservation and spends nothing."""
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL)
    with open(consortium.config_path("bank-b"), "a") as handle:
        handle.write(SHARED_LIST)
    envelope = _envelope(consortium, tmp_path / "job.toml", "tl-starve", TRANSFER + "\nshared-customers = true")

    async def body():
        async with running(consortium, ["bank-b"]):
            assert (await propose(consortium, envelope))["decision"] == "accepted"
            with pytest.raises(PeerUnreachable, match="answered 403: job tl-starve has no DP plan on the rows its"):
                await _pin_then_split(consortium, "tl-starve", 400)

    try:
        run(body())
    finally:
        consortium.write_peer_toml("bank-b")
    jobs, ledger, audit = state_of(consortium, "bank-b")
    assert ("tl-starve", "failed") in jobs and not [row for row in ledger if row[0] == "tl-starve"]
    actions = [entry[1] for entry in audit]
    assert (
        actions.index("transfer.holdout")
        < actions.index("budget.release")
        < len(actions) - 1 - actions[::-1].index("job.decline")
    )
    assert audit[-2][1] == "job.decline" and audit[-2][3].endswith("at least one training row; reservation released")


BAD_PLANS = [
    ({"n_train": 10_000, "planned": []}, "states 10000 training rows of its 400 after the split"),
    ({"n_train": 0, "planned": []}, "states 0 training rows of its 400"),
    ({"n_train": "200", "planned": []}, "'n_train' is missing or not of the right type"),
    ({"n_train": 200, "planned": [{"steps": -1}]}, "'planned' is not a list of mechanisms"),
    ({"n_train": 200}, "'planned' is missing"),
    ("accepted", "bank-a answered its step with str, not {n_train, planned, ...}"),
]


def test_a_participants_bad_plan_after_the_split_is_refused_by_the_host_and_its_acceptance_kept(consortium, tmp_path):
    """A participant answering its step with a plan that is not one (from the host's side): DataError naming
    the field, and the host keeps the acceptance it had, against which the report is then checked."""
    consortium.write_peer_toml("bank-a", policy=ALLOW_ALL)
    envelope = _envelope(consortium, tmp_path / "job.toml", "tl-bad-plan", TRANSFER + "\nshared-customers = true")

    async def body():
        async with running(consortium, ["bank-a"]) as services:
            async with member_client(consortium, OWNER) as client:
                await client.call("POST", f"{consortium.addresses['bank-a']}/v1/jobs", envelope)
            service = services["bank-a"]
            before = service.context.store.participant("tl-bad-plan", "bank-a")
            for reply, fragment in BAD_PLANS:
                with pytest.raises(DataError, match=re.escape(fragment)):
                    await service.context.mailbox.ask(
                        lambda reply=reply: service.hosting._replanned("tl-bad-plan", "bank-a", reply)
                    )
            return before, service.context.store.participant("tl-bad-plan", "bank-a")

    try:
        before, after = run(body())
    finally:
        consortium.write_peer_toml("bank-a")
    assert before.acceptance is not None and after == before


def test_sides_changed_after_the_replan_start_no_supernode_and_release_the_reservation(consortium, tmp_path):
    """bank-b's stored sides are not those its reservation was planned on (replaced after the re-plan): its
    SuperNode would train another mechanism than the reserved one, so it does not start; the job fails there
    and its reservation is released, nothing spent."""
    consortium.write_peer_toml("bank-b", policy=ALLOW_ALL)
    with open(consortium.config_path("bank-b"), "a") as handle:
        handle.write(SHARED_LIST)
    envelope = _envelope(consortium, tmp_path / "job.toml", "tl-changed", TRANSFER + "\nshared-customers = true")
    job_dir = consortium.root / "bank-b" / "state" / "jobs" / "tl-changed"

    async def body():
        async with running(consortium, ["bank-b"]):
            assert (await propose(consortium, envelope))["decision"] == "accepted"
            await _pin_then_split(consortium, "tl-changed", 0)  # every shared customer on the training side
            half = np.where(np.arange(400) % 2 == 0, TEST, TRAIN).astype(np.int8)  # 200 training rows, not 400
            store_agreed_sides(job_dir.parent.parent, "tl-changed", half, 400)
            async with member_client(consortium, "bank-a") as client:
                url = f"{consortium.addresses['bank-b']}/v1/jobs/tl-changed/start"
                await client.call("POST", url, {"fleet_address": "127.0.0.1:9"})
            for _ in range(100):
                if ("tl-changed", "failed") in state_of(consortium, "bank-b")[0]:
                    break
                await asyncio.sleep(0.1)

    try:
        run(body())
    finally:
        consortium.write_peer_toml("bank-b")
    jobs, ledger, audit = state_of(consortium, "bank-b")
    assert ("tl-changed", "failed") in jobs and not [row for row in ledger if row[0] == "tl-changed"]
    failed = [entry for entry in audit if entry[1] == "job.failed"][-1][3]
    assert "would train 200 rows" in failed and "which is not the reservation" in failed
    assert not (job_dir / "peer" / "logs" / "supernode.log").exists()


def test_a_transfer_job_with_distributed_dp_is_refused_before_it_is_signed(consortium, tmp_path):
    """Its private block would train without noise: the owner's signing refuses it, nothing reaches a peer."""
    with pytest.raises(ConfigError, match="dp.mode 'distributed' cannot train a private block"):
        _envelope(consortium, tmp_path / "job.toml", "tl-dist", TRANSFER + "\npublic-rows = 640\ndp-mode = distributed")
