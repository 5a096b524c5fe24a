"""The vertical messages as Flower RecordDicts, and a party's state carried in a node's Context (no Ray here)."""

import copy

import numpy as np
import pytest
from flwr.app import Array, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.errors import ProtocolError
from fedsilo.peers.data.bank import TEST, TRAIN
from fedsilo.peers.vertical import records
from fedsilo.peers.vertical.apps import PARTIES_DIR_KEY, Plan, build_client_app, write_party_file
from fedsilo.peers.vertical.messages import BatchRequest, Embeddings, Gradients
from fedsilo.peers.vertical.parties import FeatureParty, LabelHolder, Link, PartyDP, SplitSpec
from fedsilo.peers.vertical.state import export_state, import_state
from fedsilo.peers.vertical.training import train
from fedsilo.privacy.noise_source import SecureNoise


def test_every_message_type_of_messages_py_round_trips_through_a_record_dict():
    assert set(records.message_types()) >= {"BatchRequest", "Embeddings", "Gradients"}
    sent = [
        BatchRequest(7, np.array([3, 1, 4]), training=False),
        Embeddings("bank", 7, np.arange(6, dtype=np.float32).reshape(3, 2)),
        Gradients("bank", 7, -np.arange(6, dtype=np.float32).reshape(3, 2)),
    ]
    content = RecordDict()
    for i, message in enumerate(sent):
        records.encode(message, f"m{i}", content)
    got = records.decode_all(content)
    for i, message in enumerate(sent):
        back = got[f"m{i}"]
        assert type(back) is type(message) and back.batch == message.batch
        assert back.to_bytes() == message.to_bytes()  # the byte form the network version carries


def test_a_malformed_record_is_refused():
    content = records.encode(Embeddings("bank", 1, np.zeros((2, 2), np.float32)), "e")
    with pytest.raises(ProtocolError, match="not Gradients"):
        records.decode(content, "e", Gradients)
    with pytest.raises(ProtocolError, match="has no 'x'"):
        records.decode(content, "x")
    forged = RecordDict({"e.arrays": content["e.arrays"], "e.fields": ConfigRecord({"type": "Pickle", "batch": 1})})
    with pytest.raises(ProtocolError, match="'Pickle'"):
        records.decode(forged, "e")
    fields = ConfigRecord({"type": "Embeddings", "party": "bank", "batch": "1"})
    with pytest.raises(ProtocolError, match="Embeddings.batch must be int"):
        records.decode(RecordDict({"e.arrays": content["e.arrays"], "e.fields": fields}), "e")
    extra = copy.deepcopy(content)
    extra["e.arrays"]["labels"] = Array(np.ones(2))
    with pytest.raises(ProtocolError, match="has fields"):
        records.decode(extra, "e")


def _pair(n=200, dp=None):
    rng = np.random.default_rng(0)
    xl, xf = rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 4)).astype(np.float32)
    y = (rng.random(n) < 0.3).astype(np.float32)
    sides = np.where(np.arange(n) % 5 == 0, TEST, TRAIN).astype(np.int8)
    spec = SplitSpec("mlp", (5,), 2)
    noise = SecureNoise() if dp else None
    party = FeatureParty("bank", xf, sides, "d" * 64, spec, lr=0.3, seed=1, dp=dp, noise=noise)
    link = Link("bank", np.arange(n), n, "d" * 64, 2)
    holder = LabelHolder("broker", xl, y, np.arange(n), sides, [link], spec, lr=0.3, seed=2, dp=dp, noise=noise)
    return holder, party


def test_a_party_continues_exactly_from_its_exported_state():
    """Two epochs straight, or one epoch, export, a fresh copy of the parties, import, one more epoch: the same model."""
    holder, party = _pair()
    fresh_holder, fresh_party = copy.deepcopy(holder), copy.deepcopy(party)
    train(holder, [party], 2, 32, seed=0)
    first_holder, first_party = copy.deepcopy(fresh_holder), copy.deepcopy(fresh_party)
    train(first_holder, [first_party], 1, 32, seed=0)
    import_state(fresh_holder, export_state(first_holder))
    import_state(fresh_party, export_state(first_party))
    rng = np.random.default_rng(0)
    rng.permutation(fresh_holder.train_index)  # the epoch already done
    # the second epoch with the same order as train(..., 2, ...) draws it
    order = rng.permutation(fresh_holder.train_index)
    for batch, start in enumerate(range(0, len(order), 32), start=100):
        index = order[start : start + 32]
        embeddings = fresh_party.embed(fresh_holder.request(0, index, batch))
        _, gradients = fresh_holder.step(batch, index, [embeddings])
        fresh_party.apply(gradients[0])
    for a, b in zip(party.bottom.parameters(), fresh_party.bottom.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    for a, b in zip(holder.model.parameters(), fresh_holder.model.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_the_accountant_and_the_awaited_batch_travel_in_the_state():
    dp = PartyDP(2.0, 50.0, 1e-5)
    holder, party = _pair(dp=dp)
    index = holder.train_index[:10]
    party.embed(holder.request(0, index, 5))
    state = export_state(party)
    _, other = _pair(dp=dp)
    import_state(other, state)
    np.testing.assert_array_equal(other.accountant.counts, party.accountant.counts)
    assert other.pending.keys() == {5}
    with pytest.raises(ProtocolError, match="batch 6, which it was not asked for"):
        other.apply(Gradients("broker", 6, np.zeros((10, 2), np.float32)))
    with pytest.raises(ProtocolError, match="not of this party's model"):
        import_state(holder, state)


def test_the_client_app_refuses_a_message_before_the_hello_and_an_empty_one(tmp_path):
    """A node's first message must be the hello; a message with nothing to do is refused by the party."""
    holder, party = _pair()
    write_party_file(tmp_path, 0, holder, Plan(1, 32, 0), None)
    write_party_file(tmp_path, 1, party, Plan(1, 32, 0), None)
    app = build_client_app()

    def context(node):
        return Context(
            run_id=1,
            node_id=node,
            node_config={"partition-id": node},
            state=RecordDict(),
            run_config={PARTIES_DIR_KEY: str(tmp_path)},
        )

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    bank = context(1)
    step = Message(RecordDict(), dst_node_id=1, message_type="train.vertical_embed")
    with pytest.raises(Exception, match="before the hello"):
        app(step, bank)
    hello = app(Message(RecordDict(), dst_node_id=1, message_type="query.vertical_hello"), bank)
    assert dict(hello.content["hello"]) == {
        "role": "feature",
        "party": "bank",
        "shared": 200,
        "digest": "d" * 64,
        "width": 2,
    }
    with pytest.raises(Exception, match="neither gradients nor a request"):
        app(Message(RecordDict(), dst_node_id=1, message_type="train.vertical_embed"), bank)


def test_a_second_hello_never_resets_a_partys_release_counts(tmp_path):
    """Attacker: the relay, sending the hello again mid-job to start the bank's accountant afresh."""
    holder, party = _pair(dp=PartyDP(2.0, 50.0, 1e-5))
    write_party_file(tmp_path, 1, party, Plan(1, 32, 0), None)
    app = build_client_app()
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    bank = Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 1},
        state=RecordDict(),
        run_config={PARTIES_DIR_KEY: str(tmp_path)},
    )
    app(Message(RecordDict(), dst_node_id=1, message_type="query.vertical_hello"), bank)
    request = records.encode(holder.request(0, holder.train_index[:8], 1), "request")
    reply = app(Message(request, dst_node_id=1, message_type="train.vertical_embed"), bank)
    assert records.decode(reply.content, "embeddings", Embeddings).values.shape == (8, 2)
    app(Message(RecordDict(), dst_node_id=1, message_type="query.vertical_hello"), bank)
    counts = bank.state["fedsilo.vertical.state"]["accountant.counts"].numpy()
    assert counts[holder.train_index[:8]].tolist() == [1] * 8 and counts.sum() == 8
