"""The boosting ServerApp/ClientApp pair, driven in process through a Grid that calls the real ClientApp.

The ClientApp is the one a deployed peer runs (`fedsilo.peers.client.app.app`, every mod
included); each node keeps only its Flower ``context.state`` between messages, as a
SuperNode does (the app itself is a new process per message). The attacker's side:
the host (it relays every message and chooses every request) and a bank that sends
malformed vectors.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.errors import ConfigError
from fedsilo.peers.client import node_state
from fedsilo.peers.client.app import app as client_app
from fedsilo.peers.data.bank import encode_bank
from fedsilo.peers.data.encoding import BankSummary, TabularEncoder
from fedsilo.peers.gbdt import GBDTBank, layout_from_encoder
from fedsilo.peers.gbdt.bank import LEAVES, LEVEL
from fedsilo.peers.gbdt.client_app import STATE_KEY
from fedsilo.peers.gbdt.federation import boost
from fedsilo.peers.gbdt.job import GBDTJob
from fedsilo.peers.gbdt.model_file import GBDTModel
from fedsilo.peers.gbdt.server_app import FlowerExchange, RemoteBank, host_gbdt, run_deployed_gbdt, write_gbdt_result
from fedsilo.peers.gbdt.wire import CALL_KEY, MESSAGE_TYPE, answer_content, call_content, read_answer
from fedsilo.peers.identity.round_keys import simulated_consortium, simulated_files, simulated_verifier
from fedsilo.peers.job import JobConfig
from fedsilo.privacy.secagg import MaskedInput
from fedsilo.privacy.secagg.session import ReleaseRequest
from fedsilo.strategies.gbdt import SecureSession, Tree

JOB = "gbdt-net"
ROWS = 160


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    c = rng.choice(["a", "b", "c"], n)
    logit = 1.5 * x[:, 0] - x[:, 1] * (c == "c") + 0.5 * (x[:, 2] > 0.5) - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "c": c, "y": y})


class Banks(Grid):
    """Every message goes to the real ClientApp of its node; ``tamper(node, reply)`` may rewrite a reply."""

    def __init__(
        self, tmp_path, n: int, terms: GBDTJob, rows=None, tamper=None, rewrite=None, deployed: bool = False
    ) -> None:
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
        self.nodes = [7001 + 13 * i for i in range(n)]
        frames = [_frame((rows or {}).get(i, ROWS), i) for i in range(n)]
        self.encoder = TabularEncoder.fit([BankSummary.from_frame(f, "y") for f in frames], "y")
        encoder_path = tmp_path / "encoder.json"
        encoder_path.write_text(self.encoder.to_json())
        simulated_consortium(tmp_path / "consortium", n)
        self.job = JobConfig(label="y", encoder_path="", job_id=JOB, peers=n)
        run_config = {**self.job.to_run_config(), **terms.to_run_config()}
        self.frames, self.contexts = frames, {}
        for i, (node, frame) in enumerate(zip(self.nodes, frames, strict=True)):
            path = tmp_path / f"bank-{i}.csv"
            frame.to_csv(path, index=False)
            config = {
                **simulated_files(tmp_path / "consortium", i).node_config(),
                "data-path": str(path),
                "bank-name": f"bank-{i}",
            }
            if deployed:  # the encoder arrives from the host; the privacy record is the daemon's, on disk
                config["state-dir"] = str(tmp_path / f"state-{i}")
                config["gbdt-terms"] = json.dumps(terms.to_run_config()).encode().hex()  # what the daemon accepted
                cap = node_state.PrivacyCap(terms.epsilon, terms.delta, terms.accountant)
                node_state.open_record(tmp_path / f"state-{i}", JOB, cap)
            else:
                config["encoder-path"] = str(encoder_path)
            self.contexts[node] = Context(
                run_id=1, node_id=node, node_config=config, state=RecordDict(), run_config=run_config
            )
        self.tamper, self.rewrite = tamper, rewrite
        self.verifier = simulated_verifier(tmp_path / "consortium")

    def names(self) -> dict[int, str]:
        return {u: f"bank-{i}" for i, u in enumerate(self.nodes)}

    def ask(self, node: int, content: RecordDict, message_type: str = MESSAGE_TYPE) -> Message:
        msg = Message(content, dst_node_id=node, message_type=message_type)
        msg.metadata.__dict__["_src_node_id"] = 1
        reply = client_app(msg, self.contexts[node])
        reply.metadata.__dict__["_src_node_id"] = node
        return reply

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            content = msg.content if self.rewrite is None else self.rewrite(msg.metadata.dst_node_id, msg.content)
            reply = self.ask(msg.metadata.dst_node_id, content, msg.metadata.message_type)
            if self.tamper is not None:
                reply = self.tamper(msg.metadata.dst_node_id, msg, reply)
            if reply is not None:
                replies.append(reply)
        return replies

    def spent(self, node: int) -> int:
        record = self.contexts[node].state.get(STATE_KEY + ".spent")
        return 0 if record is None else len(json.loads(str(record["spent"])))

    def get_node_ids(self):
        return list(self.nodes)

    def set_run(self, run):
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        raise NotImplementedError

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError


def _terms(n: int = 3, **kw) -> GBDTJob:
    values = {"session": JOB, "banks": n, "row_bound": ROWS, "trees": 3, "depth": 2, "bins": 8, "dp_mode": "off"}
    values.update(kw)
    return GBDTJob(**values)


def test_the_networked_job_grows_the_same_trees_as_the_in_process_banks(tmp_path) -> None:
    """Without noise the sums are exact (up to fixed-point encoding): the ServerApp and the simulation agree."""
    terms = _terms()
    grid = Banks(tmp_path, 3, terms)
    result = host_gbdt(grid, terms, grid.names(), grid.encoder, grid.verifier)
    assert len(result.model.trees) == 3
    assert all(e["banks"] == 3 and not e["refused"] and not e["dropped"] for e in result.releases)
    layout = layout_from_encoder(grid.encoder, terms.bins)
    banks = []
    for i, frame in enumerate(grid.frames):
        data = encode_bank(frame, grid.encoder, grid.job.train.test_fraction, grid.job.train.seed)
        bins = layout.bin_rows(data.x_train.numpy().astype(np.float64))
        banks.append(GBDTBank(f"bank-{i}", i + 1, bins, data.y_train.numpy(), layout, ROWS))
    local = boost(banks, layout, replace(terms.settings, secure=False), None, ROWS).model
    for ours, theirs in zip(result.model.trees, local.trees, strict=True):
        assert np.array_equal(ours.state, theirs.state)
        assert np.array_equal(ours.group, theirs.group) and np.array_equal(ours.threshold, theirs.threshold)
        assert np.allclose(ours.value, theirs.value, atol=1e-4)
    write_gbdt_result(tmp_path / "out", JOB, result, grid.encoder)
    model = GBDTModel.load(tmp_path / "out" / "model.json")
    x = grid.encoder.transform_features(grid.frames[0])
    assert np.allclose(model.predict_margin(x), result.model.predict_margin(x))


def test_each_bank_records_exactly_the_releases_that_held_its_input_under_distributed_dp(tmp_path) -> None:
    terms = _terms(4, dp_mode="distributed", epsilon=3.0, trees=2, dropout_fraction=0.25, collusion_fraction=0.0)
    plan = terms.plan()
    grid = Banks(tmp_path, 4, terms)
    result = host_gbdt(grid, terms, grid.names(), grid.encoder, grid.verifier)
    assert len(result.model.trees) == 2
    for u, name in grid.names().items():
        assert grid.spent(u) == len(result.spent[name]) == plan.releases  # every release held every bank


def test_a_bank_above_the_row_bound_refuses_by_name_spends_nothing_and_the_others_finish(tmp_path) -> None:
    terms = _terms(4, dp_mode="local", epsilon=3.0, trees=2, dropout_fraction=0.25, collusion_fraction=0.0)
    grid = Banks(tmp_path, 4, terms, rows={2: 3 * ROWS})
    result = host_gbdt(grid, terms, grid.names(), grid.encoder, grid.verifier)
    assert len(result.model.trees) == 2
    first = result.releases[0]
    assert "bank-2" in first["refused"] and "row-bound" in first["refused"]["bank-2"]
    assert grid.spent(grid.nodes[2]) == 0 and result.spent["bank-2"] == []
    # each other bank recorded exactly the releases the host counted for it: all planned ones, unless a noisy
    # level left no node open (the tree then stops early and releases less, never more)
    names = grid.names()
    for u in grid.nodes:
        if u != grid.nodes[2]:
            assert 0 < grid.spent(u) == len(result.spent[names[u]]) <= terms.plan().releases


def _bad_vector(kind: str):
    def tamper(node, msg, reply):
        if node != 7001 or msg.content[CALL_KEY]["method"] != "session_mask" or reply.has_error():
            return reply
        masked = read_answer("session_mask", reply.content)
        y = masked.masked
        bad = y[:-1] if kind == "short" else np.concatenate([y, y[:3]]) if kind == "long" else y * 0 + (1 << 63)
        out = Message(answer_content("session_mask", MaskedInput(masked.round_id, node, bad)), reply_to=msg)
        out.metadata.__dict__["_src_node_id"] = node
        return out

    return tamper


@pytest.mark.parametrize("kind", ["short", "long", "out-of-range"])
def test_a_malformed_masked_histogram_is_refused_naming_the_bank_and_the_rest_release(tmp_path, kind) -> None:
    terms = _terms(4, trees=1, dropout_fraction=0.25, collusion_fraction=0.0)
    grid = Banks(tmp_path, 4, terms, tamper=_bad_vector(kind))
    result = host_gbdt(grid, terms, grid.names(), grid.encoder, grid.verifier)
    first = result.releases[0]
    assert "bank-0" in first["refused"] and first["banks"] == 3 and first["aborted"] is None
    assert len(result.model.trees) == 1


def test_below_the_threshold_every_release_aborts_and_nothing_is_released_or_spent(tmp_path) -> None:
    terms = _terms(4, dp_mode="distributed", trees=2, dropout_fraction=0.25, collusion_fraction=0.0)

    def silent(node, msg, reply):  # two of four banks never answer a mask call: the host cannot reach the threshold
        return None if node in (7001, 7014) and msg.content[CALL_KEY]["method"] == "session_mask" else reply

    grid = Banks(tmp_path, 4, terms, tamper=silent)
    result = host_gbdt(grid, terms, grid.names(), grid.encoder, grid.verifier)
    assert result.model.trees == [] and all(e["aborted"] for e in result.releases)
    assert all(grid.spent(u) == 0 for u in grid.nodes) and all(m == [] for m in result.spent.values())


def test_the_host_cannot_replay_a_release_or_push_a_tree_outside_the_layout(tmp_path) -> None:
    """The host, with every message it relayed, asks a bank again: each request is refused with an error reply."""
    terms = _terms(3, dp_mode="distributed", trees=1, dropout_fraction=0.0, collusion_fraction=0.0)
    sent: list[Message] = []

    def keep(node, msg, reply):
        sent.append(msg)
        return reply

    grid = Banks(tmp_path, 3, terms, tamper=keep)
    host_gbdt(grid, terms, grid.names(), grid.encoder, grid.verifier)
    node = grid.nodes[0]
    before = grid.spent(node)
    for method in ("session_mask", "session_unmask", "session_keys"):
        old = next(m for m in sent if m.metadata.dst_node_id == node and m.content[CALL_KEY]["method"] == method)
        reply = grid.ask(node, old.content)
        assert reply.has_error(), method
    assert grid.spent(node) == before  # a replayed unmask request spends nothing more


def test_a_tree_from_the_host_that_splits_outside_the_layout_is_refused_naming_the_bank(tmp_path) -> None:
    terms = _terms(4, trees=1, dropout_fraction=0.25, collusion_fraction=0.0)

    def bad_tree(node, content):
        if node != 7001 or content[CALL_KEY]["method"] != "session_mask":
            return content
        body = json.loads(content[CALL_KEY]["payload"])
        q = body["request"]
        request = ReleaseRequest(q["session_round"], q["release"], q["purpose"], tuple(q["participants"]))
        tree = body["tree"]
        tree["state"][:3], tree["group"][0], tree["threshold"][0] = [2, 1, 1], 99, 0  # group 99: not in the layout
        return call_content("session_mask", (request,), {**body, "tree": tree})

    grid = Banks(tmp_path, 4, terms, rewrite=bad_tree)
    result = host_gbdt(grid, terms, grid.names(), grid.encoder, grid.verifier)
    first = result.releases[0]
    assert "outside the job's layout" in first["refused"]["bank-0"] and first["banks"] == 3


def test_a_deployed_job_fits_the_encoder_from_summaries_and_each_peers_durable_record_is_exact(tmp_path) -> None:
    """The host's deployed flow (summaries, encoder, boosting, result, finish) against peers with state dirs."""
    terms = _terms(3, dp_mode="distributed", trees=2, dropout_fraction=0.0, collusion_fraction=0.0)
    grid = Banks(tmp_path, 3, terms, deployed=True)
    result = run_deployed_gbdt(grid, grid.job, terms, tmp_path / "out")
    assert len(result.model.trees) == 2
    for i, u in enumerate(grid.nodes):
        record = node_state.read_privacy(tmp_path / f"state-{i}", JOB)
        assert record.finished and list(record.spent) == [terms.plan().per_release] * terms.plan().releases
        assert len(result.spent[f"node {u}"]) == terms.plan().releases
    model = GBDTModel.load(tmp_path / "out" / "model.json")
    encoder = TabularEncoder.load(tmp_path / "out" / "encoder.json")
    x = encoder.transform_features(grid.frames[1])
    assert np.array_equal(model.predict_proba(x), result.model.predict_proba(x))
    # the job is over at every peer: a host that asks one more release is refused by the peer's own record
    node = grid.nodes[0]
    state = json.loads(str(grid.contexts[node].state[STATE_KEY]["session"]))["session"]
    request = ReleaseRequest(state["session_round"], state["last_release"] + 1, "leaves", tuple(grid.nodes))
    reply = grid.ask(node, call_content("session_mask", (request,), {"kind": "leaves", "tree": {}, "model": []}))
    assert reply.has_error() and "has ended at this peer" in reply.error.reason


def test_boosting_terms_are_checked_and_read_back_exactly() -> None:
    terms = _terms(trees=7, depth=3, bins=12, dp_mode="local")
    assert GBDTJob.from_run_config(terms.to_run_config()) == terms
    with pytest.raises(ConfigError, match="gbdt.banks"):
        _terms(1)
    with pytest.raises(ConfigError, match="gbdt.trees must be an integer"):
        GBDTJob.from_run_config({**terms.to_run_config(), "gbdt.trees": 2.5})
    with pytest.raises(ConfigError, match="not a boosting job"):
        GBDTJob.from_run_config({})


def test_a_host_that_opens_a_new_session_after_the_plan_gets_no_release_past_the_ledgers_reservation(tmp_path) -> None:
    """The host, once every planned release is spent, sets up fresh keys and asks again: every bank refuses."""
    terms = _terms(3, dp_mode="distributed", trees=1, dropout_fraction=0.0, collusion_fraction=0.0)
    plan = terms.plan()
    grid = Banks(tmp_path, 3, terms)
    host_gbdt(grid, terms, grid.names(), grid.encoder, grid.verifier)
    assert all(grid.spent(u) == plan.releases for u in grid.nodes)
    layout = layout_from_encoder(grid.encoder, terms.bins)
    banks = {u: RemoteBank(name, u) for u, name in grid.names().items()}
    exchange = FlowerExchange(grid, banks)
    level, leaves = terms.configs(layout, plan)
    session = SecureSession({LEVEL: level, LEAVES: leaves}, 2, list(banks.values()), 3, grid.verifier, exchange)
    assert session.members == tuple(sorted(grid.names().values()))  # the keys are set up: the banks took part
    tree = Tree(terms.depth)
    for bank in banks.values():
        bank.request(LEVEL, tree)
    outcome = session.sum(LEVEL, 2 * len(layout.slots(None)))
    assert outcome.sums is None and outcome.aborted
    assert all("releases its ledger reserved" in outcome.refused[name] for name in grid.names().values())
    assert all(grid.spent(u) == plan.releases for u in grid.nodes)


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"trees": 40}, "gbdt.trees = 40"),  # more releases, each spending less: not the plan the ledger reserved
        ({"row_bound": 50}, "gbdt.row-bound = 50"),
        ({"epsilon": 8.0}, "gbdt.epsilon = 8.0"),
        ({"dp_mode": "off"}, "gbdt.dp-mode = 'off'"),
        ({"banks": 5}, "says 5 banks, the signed job has 3"),  # smaller noise shares than the plan needs
    ],
)
def test_a_deployed_bank_refuses_a_hosts_run_config_that_departs_from_the_signed_terms(change, fragment) -> None:
    """The host writes the run config every ClientApp reads; the bank holds it to what its daemon accepted."""
    from fedsilo.peers.gbdt.client_app import check_accepted_terms

    accepted = _terms(3, dp_mode="distributed", trees=2)
    pinned = {"state-dir": "/unused", "gbdt-terms": json.dumps(accepted.to_run_config()).encode().hex()}
    context = Context(run_id=1, node_id=1, node_config=pinned, state=RecordDict(), run_config={})
    check_accepted_terms(accepted, context)
    check_accepted_terms(replace(accepted, banks=2), context)  # fewer banks than participants: larger shares
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        check_accepted_terms(replace(accepted, **change), context)
    with pytest.raises(ConfigError, match="pinned no boosting terms"):
        check_accepted_terms(accepted, Context(1, 1, {"state-dir": "/x"}, RecordDict(), {}))


def test_a_workers_binned_table_is_read_again_when_the_file_changes_and_cannot_be_written(tmp_path) -> None:
    from fedsilo.peers.gbdt.client_app import _stamp, binned_rows

    frame = _frame(ROWS, 0)
    encoder = TabularEncoder.fit([BankSummary.from_frame(frame, "y")], "y")
    encoder_path, table = tmp_path / "encoder.json", tmp_path / "bank.csv"
    encoder_path.write_text(encoder.to_json())
    frame.to_csv(table, index=False)

    def read():
        return binned_rows(str(table), _stamp(str(table)), str(encoder_path), _stamp(str(encoder_path)), 0.2, 0, 8)

    _, first, labels = read()
    assert read()[1] is first  # the same version of the file: kept
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        labels[0] = 1
    frame.iloc[: ROWS // 2].to_csv(table, index=False)  # the bank's table changes: fewer rows, a new size
    _, second, _ = read()
    assert second is not first and len(second) < len(first)
