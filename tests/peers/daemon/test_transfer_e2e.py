"""A transfer job over the network: three institutions with different schemas, three daemons as processes.

The synthetic transfer scenario's bank, card issuer and broker each hold their own
columns and part of the shared vocabulary (under its canonical names). The owner signs
a transfer job stating the vocabulary and the shared parameters, and shared customers
(the tables' IDs overlap): before training the daemons agree, by pairwise PSI and pin
frames, one train/test side for every shared customer (`roles.transfer_holdout`); each peer reserves, at
acceptance, DP-SGD's plan on its own training rows; the host fits the shared-vocabulary
encoder from the peers' aggregates of those columns, each peer appends the encoder of
its own columns, fitted from its own rows; the peers train the split-input model and
keep their own input block on their own disk. The owner pulls a verified model that
holds the shared part only; each ledger commits what its accountant spent; and from the
host's side, nothing it received (every array of every reply, as its ServerApp recorded
them, and every file of its job folder) carries a private parameter.
"""

import asyncio
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedsilo.cli import main
from fedsilo.peers.client import node_state
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.daemon.signed_job import parse_document
from fedsilo.peers.daemon.store import PeerStore
from fedsilo.peers.data.bank import TRAIN, read_table
from fedsilo.peers.data.encoding import SPLIT_COLUMN, TabularEncoder
from fedsilo.peers.job import plan_dp
from fedsilo.privacy.accounting import epsilon_spent
from fedsilo.simulations.data.schemas import synthetic_scenario, synthetic_transfer_table
from fedsilo.simulations.transfer import institution_view, shared_vocabulary

from ._consortium import OWNER, make_consortium, signed
from .test_consortium_e2e import call, ledger_rows, start, stop, wait_for

pytestmark = pytest.mark.slow
PEERS = ("bank", "card-issuer", "broker")
POLICY = (
    'model-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\nmin-participants = 2\n'
    'setups = ["horizontal", "transfer"]\n'
)
SHARED = ["shared_input", "hidden", "head"]


def institution_tables(customers=1800):
    """Each institution's own table: its columns only (shared ones under canonical names), an ID, label Y."""
    scenario = synthetic_scenario()
    vocabulary = shared_vocabulary(scenario)
    tables = {}
    for frame, spec in zip(
        scenario.split(synthetic_transfer_table(seed=3, customers=customers), 3), scenario.institutions
    ):
        shared, own = institution_view(frame, spec, vocabulary, scenario.label)
        shared = shared.loc[:, shared.notna().any()]  # the vocabulary columns it really holds
        table = shared.join(own).rename(columns={scenario.label: "Y"}).reset_index(drop=True)
        table.insert(0, "ID", np.arange(len(table)))
        tables[spec.name] = table
    return vocabulary, tables


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    consortium = make_consortium(tmp_path_factory.mktemp("transfer"), peers=PEERS)
    vocabulary, tables = institution_tables()
    for name in PEERS:
        tables[name].to_csv(consortium.root / name / "data.csv", index=False)
        consortium.write_peer_toml(name, policy=POLICY)
        others = [p for p in PEERS if p != name]
        with open(consortium.config_path(name), "a") as handle:  # the shared customers' PSI (another test)
            handle.write(
                f'\n[lists.credit-card]\npath = "data.csv"\nid-column = "ID"\npsi = {json.dumps(others)}\n'
                'psi-modes = ["both"]\npsi-protocols = ["dh"]\npsi-quota = 100000\n'
            )
    consortium.vocabulary = vocabulary
    consortium.tables = tables
    processes = {name: start(consortium, name) for name in consortium.peers}
    yield consortium
    for process in processes.values():
        stop(process)


def transfer_job(consortium, path, job_id, extra=""):
    path = consortium.job_toml(path, job_id, rounds=2, epsilon=2.0, extra='setup = "transfer"\n' + extra)
    model = f"[model]\nshared = {json.dumps(SHARED)}\nshared-vocabulary = {json.dumps(consortium.vocabulary)}\n"
    path.write_text(path.read_text().replace("[model]\n", model).replace("hidden = [16]", "hidden = [16, 8]"))
    return path


def test_a_transfer_job_trains_to_a_verified_shared_model_and_nothing_private_reaches_the_host(consortium, tmp_path):
    job_file = transfer_job(consortium, tmp_path / "job.toml", "tl-e2e", extra="shared-customers = true\n")
    envelope = signed(consortium, job_file)
    host = consortium.addresses["bank"]
    assert call(consortium, OWNER, "POST", f"{host}/v1/jobs", envelope)["state"] == "proposing"
    view = wait_for(consortium, "bank", "tl-e2e", ("finished", "failed"))
    assert view["state"] == "finished", view["detail"]

    async def pull():
        async with PeerClient(consortium.identity(OWNER), timeout=120) as client:
            return await pull_model(client, host, "tl-e2e", tmp_path / "model")

    card = asyncio.run(pull())  # verified: the host's signature, every file's hash
    assert card["signer"] == "bank" and card["job"]["setup"] == "transfer"
    assert card["transfer"]["shared_parameters"] == SHARED
    assert card["transfer"]["shared_vocabulary"] == consortium.vocabulary
    # the pulled model is the shared part, and the encoder the shared vocabulary's, nothing else
    model = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert sorted(model) == [
        "head.bias",
        "head.weight",
        "hidden1.bias",
        "hidden1.weight",
        "shared_input.bias",
        "shared_input.weight",
    ]
    encoder = TabularEncoder.from_json((tmp_path / "model" / "encoder.json").read_text())
    assert encoder.input_columns == consortium.vocabulary
    shared_size = sum(v.size for v in model.values())

    # shared customers (the tables' IDs 0..n-1 overlap): before training every pair of daemons ran the PSI on
    # its ids and the pins followed the name order; each stored its sides, its SuperNode's table carried them,
    # and every shared id has one side at all its institutions
    sides = {}
    for name in PEERS:
        stored = np.load(consortium.root / name / "state" / "jobs" / "tl-e2e" / "agreed-sides.npy")
        ids = consortium.tables[name]["ID"].to_numpy()
        assert len(stored) == len(ids)
        for identifier, side in zip(ids, stored):
            sides.setdefault(int(identifier), set()).add(int(side))
        table = consortium.root / name / "state" / "jobs" / "tl-e2e" / "peer" / "table.parquet"
        assert np.array_equal(read_table(table)[SPLIT_COLUMN].to_numpy(), stored)
    shared = [i for i in sides if sum(i < len(consortium.tables[n]) for n in PEERS) > 1]
    assert shared and all(len(sides[i]) == 1 for i in shared)
    actions = {name: _actions(consortium, name, "tl-e2e") for name in PEERS}
    first, second, third = sorted(PEERS)  # bank, broker, card-issuer
    assert actions[first].count("psi.run") == 2 and actions[third].count("transfer.pins") == 2
    assert actions[second].count("psi.run") == 1 and actions[second].count("transfer.pins") == 1
    assert {"psi.answer", "psi.confirm"} <= set(actions[second]) & set(actions[third])
    assert all(actions[name].count("transfer.holdout") == 1 for name in PEERS)

    config, _ = parse_document(envelope["job"])
    private = {}
    assert sorted(p["peer"] for p in card["participants"]) == sorted(PEERS)
    for participant in card["participants"]:
        name = participant["peer"]
        assert participant["reported"]
        # the ledger commits exactly what this peer's accountant spent, within its plan on its own rows
        peer_dir = consortium.root / name / "state" / "jobs" / "tl-e2e" / "peer"
        record = node_state.read_privacy(peer_dir, "tl-e2e")
        spent = epsilon_spent(list(record.spent), 1e-5, "prv")
        planned = epsilon_spent([plan_dp(config, participant["training_rows"]).whole_job], 1e-5, "prv")
        assert participant["epsilon"] == pytest.approx(spent, rel=1e-9) and spent <= planned + 1e-9
        # its plan was made again on the rows the agreed split trains (never the rows of its own seeded
        # split), and the node ran exactly that plan: the mechanism reserved is the one trained
        stored = np.load(consortium.root / name / "state" / "jobs" / "tl-e2e" / "agreed-sides.npy")
        assert participant["training_rows"] == int((stored == TRAIN).sum())
        plan = plan_dp(config, participant["training_rows"])
        assert all(
            (m.sample_rate, m.noise_multiplier) == (plan.sample_rate, plan.noise_multiplier) for m in record.spent
        )
        assert sum(m.steps for m in record.spent) == plan.whole_job.steps
        assert actions[name].count("budget.replan") == 1
        assert ledger_rows(consortium, name)["tl-e2e"] == "committed"
        budget = call(consortium, OWNER, "GET", f"{consortium.addresses[name]}/v1/budget")["sources"][0]
        assert budget["spent_epsilon"] == pytest.approx(spent, rel=1e-9) and budget["reserved_epsilon"] == 0
        assert main(["audit", "verify", "--config", str(consortium.config_path(name))]) == 0
        # its private input block stayed on its own disk, as wide as its own columns
        kept = node_state.read_private_weights(node_state.private_weights_file(peer_dir, "tl-e2e"), "tl-e2e")
        assert sorted(kept) == ["input.weight"]
        own = TabularEncoder.from_json(node_state.encoder_file(peer_dir, "tl-e2e").read_text())
        assert kept["input.weight"].shape == (16, own.n_features - encoder.n_features)
        private[name] = kept["input.weight"]
    assert len({w.shape for w in private.values()}) == 3  # three own schemas

    # The host's side: every array any reply carried was a SecAgg+ masked vector of the shared part
    # and the update's weight (privacy.secagg.encoding: d + 1 values), never a named private tensor.
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    received = {entry for exchange in metrics["exchanges"] for entry in exchange["arrays"]}
    assert received == {f"masked ({shared_size + 1},)"}, received
    assert all(not r["errors"] for r in metrics["rounds"])
    # and no file of the host's job folder holds a peer's private tensor
    host_files = [
        p for p in (consortium.root / "bank" / "state" / "jobs" / "tl-e2e" / "host").rglob("*") if p.is_file()
    ]
    assert host_files
    for name, weights in private.items():
        needle = np.ascontiguousarray(weights[0]).tobytes()  # one row of its private block
        assert not any(needle in path.read_bytes() for path in host_files), name


def _actions(consortium, name, job_id):
    """The actions of `name`'s audit log about `job_id` or no job (PSI answers; SQLite, read while it runs)."""
    store = PeerStore(consortium.root / name / "state")
    try:
        return [e.action for e in store.audit.entries() if e.job in (job_id, None)]
    finally:
        store.conn.close()
