"""A vertical job of the split scheme between two real daemons, on Flower's Deployment Engine, to a pulled model.

The broker (host, label holder) and the bank (feature party) hold the synthetic vertical
scenario's columns (the coded e2e test's fixtures). The broker's daemon aligns with the
bank by DH-PSI over mTLS, starts the SuperLink with the relay ServerApp and its own
SuperNode (the label holder); the bank's daemon starts a SuperNode playing its bottom
model. Checked: both jobs finished, the model pulled and verified, each ledger committed
exactly the mechanism it reserved at acceptance (which its SuperNode's durable record
holds), and from the host's side, with everything it holds: the bank's columns (names,
raw values, its encoded rows) appear in no file under the broker's directory, and every
array its SuperLink received from the bank's node is an embedding of the agreed width.
"""

from __future__ import annotations

import asyncio
import json
import pickle

import numpy as np
import pandas as pd
import pytest

from fedsilo.peers.client import node_state
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.vertical.plan import party_dp, planned_mechanisms, split_releases
from fedsilo.simulations.vertical import PARTY_COLUMNS
from tests.peers.daemon._consortium import OWNER, make_consortium, member_client, run, running, signed
from tests.peers.daemon.test_vertical_e2e import POLICY, _configure, _data

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
        planned = planned_mechanisms(party_dp(3.0, source.delta, source.accountant, 2 * EPOCHS, 1.0), 2 * EPOCHS)
        record = service.ledger.jobs("credit-card")["split-1"]
        durable = node_state.read_privacy(consortium.root / name / "state" / "jobs" / "split-1" / "peer", "split-1")
        assert record.state == "committed" and list(record.mechanisms) == planned == list(durable.spent), name
        assert durable.finished and split_releases(EPOCHS).party == 2 * EPOCHS
        if name == "broker":  # the host holds every acceptance: each party planned exactly this
            for peer in ("broker", "bank"):
                assert list(service.store.participant("split-1", peer).acceptance.planned) == planned
        spent = service.ledger.status("credit-card").spent_epsilon
        assert 2.9 < spent <= 3.0 + 1e-6, (name, spent)
    assert services["bank"].store.model("split-1") is None  # the label holder's part is not replicated to the bank
    assert (consortium.root / "bank" / "state" / "jobs" / "split-1" / "peer" / "bank.final.safetensors").is_file()
    spending = {p["peer"]: p["epsilon"] for p in card["participants"]}
    assert set(spending) == {"broker", "bank"} and all(2.9 < e <= 3.0 + 1e-6 for e in spending.values())


def test_a_split_vertical_job_trains_between_two_daemons_on_the_deployment_engine(tmp_path, monkeypatch):
    monkeypatch.setattr("tests.peers.daemon.test_vertical_e2e.POLICY", SPLIT_POLICY)
    consortium = make_consortium(tmp_path / "c", peers=("broker", "bank"), rows=10)
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
