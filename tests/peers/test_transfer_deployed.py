"""A deployed transfer job at the ClientApp and at the host, from the attacker's side (fast, no engine).

The peer tells the host aggregates of the shared vocabulary only (never of its own
columns); it refuses a host encoder that would make one of its own columns a shared
input, and any run config that shares more than the job it accepted; it keeps its
own-columns encoder and private block on its own disk. The host refuses a participant's
update that carries its private block: by its reply guard, and under SecAgg+ by length.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.peers.client import app as client
from fedsilo.peers.client import node_state
from fedsilo.peers.data.encoding import BankSummary, TabularEncoder
from fedsilo.peers.data.vocabulary import institution_table, shared_frame
from fedsilo.peers.job import DPSpec, JobConfig, TrainSpec
from fedsilo.peers.models import ModelSpec
from fedsilo.peers.server.host import JobHost
from fedsilo.strategies.guard import check_train_reply

VOCABULARY = ("limit", "age", "education")
LABEL = "Y"


def _table(seed, own):
    rng = np.random.default_rng(seed)
    n = 200
    frame = pd.DataFrame({"limit": rng.integers(1, 50, n) * 1000.0, "age": rng.integers(20, 70, n)})
    for name in own:
        frame[name] = rng.normal(size=n)
    frame[LABEL] = rng.integers(0, 2, n)
    return frame


def _job():
    return JobConfig(
        label=LABEL,
        encoder_path="",  # deployed: the encoder arrives from the host
        job_id="tl",
        peers=2,
        model=ModelSpec("mlp", (16, 8)),
        shared=("shared_input", "hidden", "head"),
        vocabulary=VOCABULARY,
        train=TrainSpec(rounds=2, batch_size=32),
        dp=DPSpec(epsilon=2.0),
    )


@pytest.fixture
def peer(tmp_path):
    """A deployed peer's node: its table as the daemon writes it (no 'education'), its state dir."""
    path = tmp_path / "table.parquet"
    institution_table(_table(1, ("salary", "branch_score")), VOCABULARY, LABEL).to_parquet(path, index=False)
    state = tmp_path / "state"
    node_state.open_record(state, "tl", node_state.PrivacyCap(2.0, 1e-5, "prv"))
    context = Context(
        run_id=1,
        node_id=11,
        node_config={
            "data-path": str(path),
            "state-dir": str(state),
            "job-id": "tl",
            "secagg": "off",
            "shared": "shared_input,hidden,head",  # what its daemon accepted (peers.deployment.join)
            "vocabulary": ",".join(VOCABULARY),
        },
        state=RecordDict(),
        run_config=_job().to_run_config(),
    )
    return context, path, state


def _query(kind, content):
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    return Message(RecordDict({"config": ConfigRecord({"job-id": "tl", **content})}), dst_node_id=11, message_type=kind)


def _shared_encoder(path):
    other = institution_table(_table(2, ("pay_0",)).assign(education=1.0), VOCABULARY, LABEL)
    mine = pd.read_parquet(path)
    return TabularEncoder.fit(
        [BankSummary.from_frame(shared_frame(t, VOCABULARY, LABEL), LABEL) for t in (mine, other)], LABEL
    )


def test_the_peer_summarizes_the_shared_vocabulary_only(peer):
    context, _, _ = peer
    reply = client.summarize(_query("query.summarize", {"label": LABEL}), context)
    assert not reply.has_error(), reply.error.reason
    summary = json.loads(str(reply.content["config"]["summary"]))
    assert [c["name"] for c in summary["columns"]] == list(VOCABULARY)
    assert "salary" not in json.dumps(summary) and "branch_score" not in json.dumps(summary)
    assert summary["columns"][2]["missing"] == 200  # a vocabulary column it lacks: all missing, nothing else


def test_the_peer_appends_its_own_encoder_and_keeps_it_home(peer):
    context, path, state = peer
    shared = _shared_encoder(path)
    reply = client.keep_encoder(_query("query.encoder", {"encoder": shared.to_json()}), context)
    assert not reply.has_error(), reply.error.reason
    kept = TabularEncoder.from_json(node_state.encoder_file(state, "tl").read_text())
    assert kept.input_columns == [*VOCABULARY, "salary", "branch_score"]
    job = node_state.with_node_encoder(JobConfig.from_run_config(context.run_config), context.node_config)
    assert job.model.shared_features == shared.n_features and kept.n_features == shared.n_features + 2

    # a training round: only the shared part leaves, the own block stays in the state dir
    host = JobHost(JobConfig.from_run_config({**context.run_config, "model.shared-features": shared.n_features}))
    weights = host.initial_weights()  # what the host's ServerApp sends (peers.server.app sets the width)
    assert sorted(weights) == [
        "head.bias",
        "head.weight",
        "hidden1.bias",
        "hidden1.weight",
        "shared_input.bias",
        "shared_input.weight",
    ]
    arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in weights.items()})
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    message = Message(
        RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1, "job-id": "tl"})}),
        dst_node_id=11,
        message_type="train",
    )
    reply = client.train(message, context)
    assert not reply.has_error(), reply.error.reason
    assert set(reply.content["arrays"].keys()) == set(arrays.keys())
    private = node_state.read_private_weights(node_state.private_weights_file(state, "tl"), "tl")
    assert set(private) == {"input.weight"} and private["input.weight"].shape == (16, 2)


@pytest.mark.parametrize(
    "columns", [("limit", "age", "salary"), ("limit", "age"), ("age", "limit", "education")], ids=str
)
def test_a_host_encoder_that_is_not_the_signed_vocabulary_is_refused(peer, columns):
    """The host tries to make an own column a shared input (or to drop or reorder the vocabulary)."""
    context, path, state = peer
    table = pd.read_parquet(path).assign(education=1.0)
    forged = TabularEncoder.fit([BankSummary.from_frame(table[[*columns, LABEL]], LABEL)], LABEL)
    reply = client.keep_encoder(_query("query.encoder", {"encoder": forged.to_json()}), context)
    assert reply.has_error() and "the signed job's shared vocabulary is ['limit', 'age', 'education']" in (
        reply.error.reason
    )
    assert not node_state.encoder_file(state, "tl").exists()


@pytest.mark.parametrize(
    "key, value",
    [
        ("model.shared", "shared_input,hidden,head,input"),  # the host asks for the own-columns block
        ("model.shared-vocabulary", "limit,age,education,salary"),  # ... or the aggregates of an own column
        ("model.shared-vocabulary", "limit,age"),
    ],
)
def test_a_host_run_config_sharing_more_than_the_peer_accepted_is_refused(peer, key, value):
    context, path, state = peer
    context.run_config = {**context.run_config, key: value}
    summary = client.summarize(_query("query.summarize", {"label": LABEL}), context)
    assert summary.has_error() and "this peer accepted" in summary.error.reason
    assert not summary.has_content()  # an error reply: no aggregate of anything left
    shared = _shared_encoder(path)
    kept = client.keep_encoder(_query("query.encoder", {"encoder": shared.to_json()}), context)
    assert kept.has_error() and "refused" in kept.error.reason
    assert not node_state.encoder_file(state, "tl").exists()


def test_the_daemon_gives_its_supernode_the_accepted_sharing():
    from fedsilo.peers.deployment.join import _node_config

    text = _node_config(Path("t.parquet"), Path("state"), _job(), None)
    assert 'shared="shared_input,hidden,head"' in text and 'vocabulary="limit,age,education"' in text


def test_the_host_refuses_an_update_carrying_a_private_block():
    """A participant that sends its own input block along with the shared part is refused by the host's guard."""
    job = JobConfig.from_run_config({**_job().to_run_config(), "model.shared-features": 5})
    shared = JobHost(job).initial_weights()
    expected = {k: tuple(v.shape) for k, v in shared.items()}
    assert "input.weight" not in expected and "shared_input.weight" in expected

    def reply(arrays):
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 11
        record = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
        sent = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=11, message_type="train")
        return Message(RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": 100})}), reply_to=sent)

    assert check_train_reply(reply(shared), expected, "num-examples") is None
    leaking = {**shared, "input.weight": np.zeros((16, 2), np.float32)}
    assert check_train_reply(reply(leaking), expected, "num-examples") == (
        "update names differ from the model: missing [], unexpected ['input.weight']"
    )


def test_under_secure_aggregation_a_masked_update_carrying_a_private_block_is_refused():
    """The same participant under SecAgg+ (the deployed default): its masked vector is longer than the
    shared part's, so the host refuses it by length and unmasks the others' exact sum without it."""
    from tests.privacy.secagg._harness import Harness

    shared_size = 369  # the e2e job's shared parameters
    h = Harness(4, dim=shared_size, seed=5)
    bad = h.nodes[1]
    h.advertise()
    h.share()
    h.inputs[bad] = np.concatenate([h.inputs[bad], np.full(16 * 10, 0.5)])  # its own (16, 10) block appended
    h.mask()
    assert bad in h.refused and "wrong length" in str(h.refused[bad])
    result = h.unmask()
    assert bad in result.dropped and bad not in result.survivors
    h.check_exact(result)
