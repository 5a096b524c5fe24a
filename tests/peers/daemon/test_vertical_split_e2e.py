"""A vertical job of the split scheme between two real daemons, on Flower's Deployment Engine, to a pulled model.

The broker (host, label holder) and the bank (feature party) hold the synthetic vertical
scenario's columns (the coded e2e test's fixtures); a third daemon, `outsider`, is a
member of the consortium but not of the job. The broker's daemon aligns with the
bank by DH-PSI over mTLS, starts the SuperLink with the relay ServerApp and its own
SuperNode (the label holder); the bank's daemon starts a SuperNode playing its bottom
model. Checked: both jobs finished, the model pulled and verified, each ledger committed
exactly the mechanism it reserved at acceptance (the broker's: its SuperNode's durable
record; the bank's: that record plus its one scoring release per customer), and from the
host's side, with everything it holds: the bank's columns (names, raw values, its encoded
rows) appear in no file under the broker's directory, and every array its SuperLink
received from the bank's node is an embedding of the agreed width. Then the owner scores
customers through the broker (`fedsilo score`): the bank answers noised embeddings through
a PSI, each customer drawn once (asked again, the host gets the same values: it cannot
average the noise away), within the broker's quota, audited at both ends, its ledger
untouched; a withdrawn model is refused at both ends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import pickle
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fedsilo.cli import main
from fedsilo.peers.client import node_state
from fedsilo.peers.daemon import signed_job
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.vertical.plan import NETWORK_SCORING, party_dp, planned_mechanisms, split_releases
from fedsilo.privacy.accounting import Mechanism
from fedsilo.simulations.vertical import PARTY_COLUMNS
from tests.peers.daemon._consortium import OWNER, make_consortium, member_client, run, running, signed
from tests.peers.daemon.test_vertical_e2e import POLICY, _configure, _data, _Later

pytestmark = pytest.mark.slow

SPLIT_POLICY = POLICY + 'vertical-schemes = ["split"]\n'
EPOCHS, WIDTH = 2, 4


async def _wait_long(client, address: str, job_id: str, seconds: float = 300.0) -> dict:
    """The job's view once it ended (engine processes start slowly on a loaded machine: up to `seconds`)."""
    for _ in range(int(seconds / 0.2)):
        view = await client.call("GET", f"{address}/v1/jobs/{job_id}")
        if view["state"] in ("finished", "failed", "cancelled"):
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end: {view}")


def _split_job(consortium, tmp_path, job_id: str, **options):
    """The owner's job file for a split vertical job between the broker (label holder) and the bank, ε = 3."""
    job_file = consortium.job_toml(
        tmp_path / "job.toml", job_id, ["broker", "bank"], epsilon=3.0, extra='setup = "vertical"', **options
    )
    job_file.write_text(job_file.read_text() + '\n[vertical]\nscheme = "split"\n')
    return job_file


def _files(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()]


def _check_ledgers_and_card(consortium, services, card, tmp_path) -> None:
    """The pulled card, and each peer's ledger against its reservation and its SuperNode's durable record."""
    assert card["setup"] == "vertical" and card["scheme"] == "split"
    # few customers and DP at ε = 3 over 2 epochs: the AUC is a number, not a utility claim (the bench's)
    metrics = card["metrics"]
    shared = len(
        json.loads((consortium.root / "broker" / "state" / "vertical" / "split-1" / "alignment.json").read_text())[
            "rows"
        ]
    )
    assert metrics["shared_customers"] == shared and metrics["test_customers_shared"] == round(0.2 * shared)
    assert 0.0 <= metrics["final_auc"] <= 1.0
    assert sorted(p.name for p in (tmp_path / "pulled").iterdir()) == [
        "encoder.json",
        "metrics.json",
        "model.safetensors",
        "model_card.json",
        "model_card.sig",
    ]
    for name in ("broker", "bank"):
        service = services[name]
        assert service.store.job("split-1").state == "finished", (name, service.store.job("split-1"))
        source = service.context.config.sources["credit-card"]
        releases = 2 * EPOCHS + (NETWORK_SCORING if name == "bank" else 0)  # the bank's: one more, for scoring
        planned = planned_mechanisms(party_dp(3.0, source.delta, source.accountant, releases, 1.0), releases)
        record = service.ledger.jobs("credit-card")["split-1"]
        durable = node_state.read_privacy(consortium.root / name / "state" / "jobs" / "split-1" / "peer", "split-1")
        z = planned[0].noise_multiplier
        assert durable.finished and list(durable.spent) == [Mechanism(z, 1.0, 2 * EPOCHS)], name  # what it trained
        assert record.state == "committed" and list(record.mechanisms) == planned, name
        assert split_releases(EPOCHS).party == 2 * EPOCHS
        assert list(services["broker"].store.participant("split-1", name).acceptance.planned) == planned
        spent = service.ledger.status("credit-card").spent_epsilon
        assert 2.9 < spent <= 3.0 + 1e-6, (name, spent)
    assert services["bank"].store.model("split-1") is None  # the label holder's part is not replicated to the bank
    assert (consortium.root / "bank" / "state" / "jobs" / "split-1" / "peer" / "bank.final.safetensors").is_file()
    spending = {p["peer"]: p["epsilon"] for p in card["participants"]}
    assert set(spending) == {"broker", "bank"} and all(2.9 < e <= 3.0 + 1e-6 for e in spending.values())


async def _score_through_the_broker(consortium, services, tmp_path, capsys, monkeypatch) -> None:
    """Scoring over the network, two hours after the job (its signed form expired, its model did not)."""
    monkeypatch.setattr(signed_job, "dt", SimpleNamespace(datetime=_Later, timedelta=dt.timedelta, UTC=dt.UTC))
    broker_url, bank_url = consortium.addresses["broker"], consortium.addresses["bank"]
    bank = services["bank"]
    ids = list(pd.read_csv(consortium.root / "broker" / "data.csv")["ID"])
    bank_ids = set(pd.read_csv(consortium.root / "bank" / "data.csv")["ID"])
    wanted = ids[:16]
    held = [i for i in wanted if i in bank_ids]
    assert 0 < len(held) < len(wanted)
    stored = consortium.root / "bank" / "state" / "vertical" / "split-1" / "scoring.npy"
    record = bank.ledger.jobs("credit-card")["split-1"]
    ledger_before = (record.state, record.mechanisms)
    (tmp_path / "ids.txt").write_text("\n".join(wanted) + "\n")
    command = [
        "score", "split-1", "--peer", broker_url, "--ids", tmp_path / "ids.txt",
        "--identity", consortium.identity_dir(OWNER), "--out", tmp_path / "scores.csv",
    ]  # fmt: skip
    capsys.readouterr()
    assert await asyncio.to_thread(main, [str(a) for a in command]) == 0
    assert (
        "with vertical job split-1" in (printed := capsys.readouterr().out)
        and "(noised embeddings from bank" in printed
    )
    written = pd.read_csv(tmp_path / "scores.csv", dtype={"id": str})
    scores = dict(zip(written["id"], [None if np.isnan(v) else v for v in written["score"]]))
    assert list(written["id"]) == wanted
    assert {i for i, v in scores.items() if v is not None} == set(held)  # the bank's customers, and only them
    assert all(0.0 < scores[i] < 1.0 for i in held)
    first = np.load(stored)
    assert int((~np.isnan(first).any(axis=1)).sum()) == len(held)  # one release per held customer, stored
    assert np.abs(first[~np.isnan(first).any(axis=1)]).max() > 0
    entry = bank.store.audit.entries()[-1]
    assert entry.action == "vertical.embed" and f"{len(held)} embeddings answered ({len(held)} released now" in (
        entry.detail
    )
    assert [e.action for e in services["broker"].store.audit.entries()][-1] == "vertical.score"

    # another member, with the job's id and the broker's ids: refused at both doors, nothing drawn or charged
    async with member_client(consortium, "outsider") as outsider:
        with pytest.raises(PeerUnreachable, match="403: only the job's label holder broker"):
            await outsider.call("POST", f"{bank_url}/v1/jobs/split-1/vertical/embed", {"session": "00" * 16})
        with pytest.raises(PeerUnreachable, match="403: only job split-1's owner risk-dept or its host"):
            await outsider.call("POST", f"{broker_url}/v1/jobs/split-1/score", {"ids": held})
    assert np.array_equal(np.load(stored), first, equal_nan=True)

    # the host asks again, in a new PSI session: the same stored releases, so the same scores (no averaging)
    async with member_client(consortium, OWNER) as owner:
        again = await owner.call("POST", f"{broker_url}/v1/jobs/split-1/score", {"ids": held})
        assert again["scores"] == {i: round(scores[i], 6) for i in held}
        assert np.array_equal(np.load(stored), first, equal_nan=True)
        assert "0 released now" in bank.store.audit.entries()[-1].detail
        # over the broker's quota at the bank (30 shared customers per window): 429, nothing drawn
        with pytest.raises(PeerUnreachable, match="429"):
            await owner.call("POST", f"{broker_url}/v1/jobs/split-1/score", {"ids": ids[16:120]})
        assert np.array_equal(np.load(stored), first, equal_nan=True)
        assert (
            bank.ledger.jobs("credit-card")["split-1"].state,
            bank.ledger.jobs("credit-card")["split-1"].mechanisms,
        ) == ledger_before  # scoring spends what was committed

        # withdrawn: the owner cancels; refused at the host and at the bank, nothing drawn
        await owner.call("POST", f"{broker_url}/v1/jobs/split-1/cancel", {})
        for _ in range(50):
            if bank.store.job("split-1").state == "cancelled":
                break
            await asyncio.sleep(0.1)
        with pytest.raises(PeerUnreachable, match="409.*withdrawn"):
            await owner.call("POST", f"{broker_url}/v1/jobs/split-1/score", {"ids": held[:1]})
    async with member_client(consortium, "broker") as broker:
        with pytest.raises(PeerUnreachable, match="409.*withdrawn"):
            await broker.call("POST", f"{bank_url}/v1/jobs/split-1/vertical/embed", {"session": "00" * 16})
    assert np.array_equal(np.load(stored), first, equal_nan=True)
    assert (
        bank.ledger.jobs("credit-card")["split-1"].state,
        bank.ledger.jobs("credit-card")["split-1"].mechanisms,
    ) == ledger_before


def test_a_split_vertical_job_trains_between_two_daemons_on_the_deployment_engine(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tests.peers.daemon.test_vertical_e2e.POLICY", SPLIT_POLICY)
    # a third member, in the consortium but not in the job: it gets no embedding and no score
    consortium = make_consortium(tmp_path / "c", peers=("broker", "bank", "outsider"), rows=10)
    _data(consortium.root, customers=600)
    _configure(consortium)
    job_file = _split_job(consortium, tmp_path, "split-1", rounds=EPOCHS)

    async def body() -> None:
        async with running(consortium) as services:
            broker_url = consortium.addresses["broker"]
            async with member_client(consortium, OWNER) as owner:
                await owner.call("POST", f"{broker_url}/v1/jobs", signed(consortium, job_file))
                view = await _wait_long(owner, broker_url, "split-1")
                assert view["state"] == "finished", view
                card = await pull_model(owner, broker_url, "split-1", tmp_path / "pulled")
            for _ in range(100):  # the bank ends its side once its SuperNode's record is finished
                if services["bank"].store.job("split-1").state != "training":
                    break
                await asyncio.sleep(0.1)
            _check_ledgers_and_card(consortium, services, card, tmp_path)
            await _score_through_the_broker(consortium, services, tmp_path, capsys, monkeypatch)

    run(body())

    # the host's side, with everything under its directory (daemon state, SuperLink, relay, its SuperNode)
    bank_table = pd.read_csv(consortium.root / "bank" / "data.csv")
    bank_party = consortium.root / "bank" / "state" / "jobs" / "split-1" / "peer" / "party.pickle"
    shared_rows = json.loads(
        (consortium.root / "bank" / "state" / "vertical" / "split-1" / "alignment.json").read_text()
    )
    first = bank_table.iloc[shared_rows["rows"][:3]]
    secrets = [name.encode() for name in PARTY_COLUMNS if name not in ("pay_0",)]  # pay_0 could be a substring
    secrets += [np.ascontiguousarray(first[list(PARTY_COLUMNS)].to_numpy(np.float64)).tobytes()]
    lines = (consortium.root / "bank" / "data.csv").read_text().splitlines()
    secrets += [lines[1 + r].split(",", 1)[1].encode() for r in shared_rows["rows"][:3]]  # raw CSV rows, no id
    encoded = pickle.loads(bank_party.read_bytes())["party"].x[:2].numpy().tobytes()
    assert encoded in bank_party.read_bytes()  # the probe finds the bank's encoded rows where they are
    secrets.append(encoded)
    broker_files = _files(consortium.root / "broker")
    assert any("superlink" in str(p) for p in broker_files)  # the SuperLink's and the relay's files are searched
    for path in broker_files:
        content = path.read_bytes()
        for secret in secrets:
            assert secret not in content, f"{path} holds the bank's {secret[:20]!r}"
    # every array the relay received from the bank's node is a batch of noised embeddings of the agreed width
    result = json.loads(
        (consortium.root / "broker" / "state" / "jobs" / "split-1" / "host" / "result" / "metrics.json").read_text()
    )
    from_bank = {a for e in result["exchanges"] if e["message_type"] == "train.vertical_embed" for a in e["arrays"]}
    assert from_bank and all(a.startswith("values (") and a.endswith(f", {WIDTH})") for a in from_bank), from_bank
    assert len(result["epochs"]) == EPOCHS


def test_a_split_job_whose_alignment_fails_releases_both_reservations(tmp_path, monkeypatch):
    """The bank's PSI quota is smaller than the broker's table: the alignment is refused before anything is
    released, so the broker's job fails with its reservation released (not committed) and the bank's too."""
    monkeypatch.setattr("tests.peers.daemon.test_vertical_e2e.POLICY", SPLIT_POLICY)
    consortium = make_consortium(tmp_path / "c", peers=("broker", "bank"), rows=10)
    _data(consortium.root, customers=600)
    _configure(consortium)
    config = consortium.config_path("bank")
    config.write_text(config.read_text().replace("psi-quota = 100000", "psi-quota = 10"))
    job_file = _split_job(consortium, tmp_path, "split-2")

    async def body() -> None:
        async with running(consortium) as services:
            broker_url = consortium.addresses["broker"]
            async with member_client(consortium, OWNER) as owner:
                await owner.call("POST", f"{broker_url}/v1/jobs", signed(consortium, job_file))
                view = await _wait_long(owner, broker_url, "split-2", seconds=60)
            assert view["state"] == "failed" and "429" in view["detail"], view
            for _ in range(100):
                if services["bank"].store.job("split-2").state == "cancelled":
                    break
                await asyncio.sleep(0.1)
            for name, state in (("broker", "failed"), ("bank", "cancelled")):
                service = services[name]
                assert service.store.job("split-2").state == state, name
                assert "split-2" not in service.ledger.jobs("credit-card"), name  # released: no entry left
                assert service.ledger.status("credit-card").spent_epsilon == 0.0
                actions = [e.action for e in service.store.audit.entries() if e.job == "split-2"]
                assert "budget.release" in actions and "budget.commit" not in actions, (name, actions)
            assert not (consortium.root / "broker" / "state" / "jobs" / "split-2").exists()  # no engine started

    run(body())
