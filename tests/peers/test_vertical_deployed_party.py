"""A split vertical job's parties as their SuperNodes run them (the ClientApp with a deployed node config).

Each party reads the party file its own daemon wrote (`vertical-party`), refuses to release
anything unless its daemon opened the job's privacy record, writes what its accountant
charged into that durable record before each reply leaves, and refuses any release once
the record says the job ended. From the feature party's side: what it receives before
the first gradient (the label holder's first batch request) is byte-identical whatever
the labels.
"""

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.errors import ProtocolError
from fedsilo.peers.client import node_state
from fedsilo.peers.flower_app import PARTY_NODE_KEY
from fedsilo.peers.vertical import apps, records
from fedsilo.peers.vertical.messages import BatchRequest
from fedsilo.peers.vertical.network import release_plan
from fedsilo.peers.vertical.parties import FeatureParty, LabelHolder, Link, SplitSpec
from fedsilo.peers.vertical.plan import party_dp
from fedsilo.privacy.accounting import Mechanism

SHARED, JOB = 40, "split-unit"
SPEC = SplitSpec("mlp", (8,))
DP = party_dp(3.0, 1e-5, "prv", 4, 1.0)


def _message(content: RecordDict, kind: str) -> Message:
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    return Message(content, dst_node_id=1, message_type=kind)


def _node(tmp_path, party, name: str) -> Context:
    directory = tmp_path / name
    path = apps.write_party_file(directory, 0, party, apps.Plan(2, 16, 0), None)
    config = {PARTY_NODE_KEY: str(path), "state-dir": str(directory), "job-id": JOB}
    return Context(run_id=1, node_id=1, node_config=config, state=RecordDict(), run_config={})


def _bank(tmp_path) -> tuple[FeatureParty, Context]:
    rng = np.random.default_rng(0)
    party = FeatureParty(
        "bank", rng.normal(size=(SHARED, 5)), release_plan(SHARED, 0.2, 0), "d", SPEC, lr=0.5, seed=1, dp=DP
    )
    return party, _node(tmp_path, party, "bank")


def _cap(context: Context) -> None:
    node_state.open_record(context.node_config["state-dir"], JOB, node_state.PrivacyCap(3.0, 1e-5, "prv"))


def _request(positions, batch=1) -> RecordDict:
    return records.encode(BatchRequest(batch, np.asarray(positions), True), "request")


def test_a_party_releases_nothing_unless_its_daemon_opened_the_privacy_record(tmp_path):
    _, context = _bank(tmp_path)
    with pytest.raises(ProtocolError, match="has no privacy record opened by its daemon: refused"):
        apps._hello(_message(RecordDict(), "query.vertical_hello"), context)
    assert node_state.read_privacy(tmp_path / "bank", JOB) is None and apps.STATE_KEY not in context.state


def test_each_release_is_in_the_durable_record_before_the_reply_and_none_after_the_end(tmp_path):
    party, context = _bank(tmp_path)
    _cap(context)
    apps._hello(_message(RecordDict(), "query.vertical_hello"), context)
    train = np.flatnonzero(release_plan(SHARED, 0.2, 0) == 0)[:5]
    reply = apps._embed(_message(_request(train), "train.vertical_embed"), context)
    record = node_state.read_privacy(tmp_path / "bank", JOB)
    assert list(record.spent) == [Mechanism(DP.noise_multiplier, 1.0, 1)] and not record.finished
    values = records.decode(reply.content, "embeddings").values
    with torch.no_grad():
        raw = party.bottom(party.x[train]).numpy()
    assert values.shape == (5, SPEC.embedding) and not np.allclose(values, raw, atol=0.05)  # clipped and noised
    apps._finish(_message(RecordDict(), "query.vertical_finish"), context)
    ended = node_state.read_privacy(tmp_path / "bank", JOB)
    assert ended.finished and ended.spent == record.spent
    assert (tmp_path / "bank" / "bank.final.safetensors").is_file()
    with pytest.raises(ProtocolError, match="has ended at this peer; nothing more is released"):
        apps._embed(_message(_request(train[:2], batch=2), "train.vertical_embed"), context)
    assert node_state.read_privacy(tmp_path / "bank", JOB) == ended


def test_what_the_feature_party_receives_before_the_first_gradient_does_not_depend_on_the_labels(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(SHARED, 3)), (rng.random(SHARED) < 0.3).astype(np.float32)
    sides = release_plan(SHARED, 0.2, 0)
    link = Link("bank", np.arange(SHARED), SHARED, "d", SPEC.embedding)
    first = []
    for labels, name in ((y, "broker"), (1 - y, "flipped")):
        holder = LabelHolder(name, x, labels, np.arange(SHARED), sides, [link], SPEC, lr=0.5, seed=2, dp=DP)
        context = _node(tmp_path, holder, name)
        node_state.open_record(tmp_path / name, JOB, node_state.PrivacyCap(3.0, 1e-5, "prv"))
        apps._hello(_message(RecordDict(), "query.vertical_hello"), context)
        reply = apps._step(_message(RecordDict(), "train.vertical_step"), context)
        first.append(records.decode(reply.content, "request.0").to_bytes())
    assert first[0] == first[1]
    assert BatchRequest.from_bytes(first[0]).positions.size == 16  # the plan's batch, positions only
