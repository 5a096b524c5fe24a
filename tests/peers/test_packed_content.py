"""Packed content: byte-exact round trip, three Flower objects per message, refusals, the ClientApp mod."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.errors import ProtocolError
from fedsilo.peers.packed_content import (
    PACKED_KEY,
    is_packed,
    pack,
    pack_message,
    packed_content_mod,
    unpack,
    unpack_reply,
)
from fedsilo.peers.server.polling_grid import PromptGrid


@pytest.fixture(autouse=True)
def _task_identity():
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1  # what a Message needs


def _weights():
    rng = np.random.default_rng(0)
    return {
        "net.0.weight": rng.normal(size=(16, 23)).astype(np.float32),
        "net.0.bias": np.zeros(16, dtype=np.float32),
        "net.2.weight": rng.normal(size=(1, 16)).astype(np.float64),
        "steps": np.array(7, dtype=np.int64),
    }


def _content():
    return RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in _weights().items()}),
            "config": ConfigRecord({"server-round": 3}),
            "single": ArrayRecord({"only": Array(np.arange(5))}),
        }
    )


def test_round_trip_is_byte_exact_and_keeps_order_dtypes_shapes():
    content = _content()
    packed = pack(content)
    assert is_packed(packed) and list(packed.keys()) == [PACKED_KEY]
    restored = unpack(packed)
    assert list(restored.keys()) == ["arrays", "config", "single"]
    assert list(restored["arrays"].keys()) == list(_weights())
    for key, value in _weights().items():
        got = restored["arrays"][key].numpy()
        assert got.dtype == value.dtype and got.shape == value.shape and np.array_equal(got, value)
    # The same Flower objects, so the same ids, as the content that was packed.
    assert restored.object_id == content.object_id
    assert restored["config"]["server-round"] == 3 and np.array_equal(restored["single"]["only"].numpy(), np.arange(5))


def test_a_message_travels_as_three_flower_objects():
    before = len(get_all_nested_objects(Message(_content(), dst_node_id=1, message_type="train")))
    after = len(get_all_nested_objects(pack_message(Message(_content(), dst_node_id=1, message_type="train"))))
    assert (before, after) == (15, 3)  # message, RecordDict, the packed record


def test_unpacked_content_is_left_as_it_is():
    content = RecordDict({"config": ConfigRecord({"a": 1}), "one": ArrayRecord({"x": Array(np.ones(3))})})
    assert unpack(content) is content and not is_packed(content)


def _frames(packed: RecordDict) -> bytes:
    return packed[PACKED_KEY]["objects"]


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]), "does not match its id"),  # an object's bytes changed
        (lambda blob: blob[:-3], "truncated"),
        (lambda blob: blob + b"x" * 10, "truncated"),
    ],
)
def test_altered_or_truncated_objects_are_refused(tamper, reason):
    packed = pack(_content())
    packed[PACKED_KEY]["objects"] = tamper(_frames(packed))
    with pytest.raises(ProtocolError, match=reason):
        unpack(packed)


def test_a_tree_that_is_not_a_whole_recorddict_is_refused():
    packed = pack(_content())
    packed[PACKED_KEY]["root"] = _content()["config"].object_id  # a record of the tree, not its RecordDict
    with pytest.raises(ProtocolError, match="not a RecordDict|outside its tree"):
        unpack(packed)
    missing = pack(_content())
    missing[PACKED_KEY]["root"] = "0" * 64
    with pytest.raises(ProtocolError, match="not a valid object tree"):
        unpack(missing)
    del missing[PACKED_KEY]["root"]
    with pytest.raises(ProtocolError, match="lacks its root"):
        unpack(missing)


def _echo(msg: Message, _context: Context) -> Message:
    seen = list(msg.content["arrays"].keys())
    arrays = ArrayRecord({k: Array(np.asarray(a.numpy() * 2)) for k, a in msg.content["arrays"].items()})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"n": len(seen)})}), reply_to=msg)


def _received(content):
    message = Message(content, dst_node_id=1, message_type="train")
    message.metadata.__dict__["_message_id"] = message.object_id  # as the Deployment Engine sets it
    return message


def test_mod_unpacks_for_the_app_and_packs_the_reply_only_when_the_request_was_packed():
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    reply = packed_content_mod(_received(pack(_content())), context, _echo)
    assert is_packed(reply.content)
    assert unpack(reply.content)["metrics"]["n"] == 4
    doubled = unpack(reply.content)["arrays"]
    assert all(np.array_equal(doubled[k].numpy(), v * 2) for k, v in _weights().items())
    plain = packed_content_mod(_received(_content()), context, _echo)  # simulation: never packed
    assert not is_packed(plain.content) and list(plain.content["arrays"].keys()) == list(_weights())


def test_a_malformed_packed_reply_becomes_an_error_reply_from_that_peer():
    request = _received(_content())
    content = pack(_content())
    content[PACKED_KEY]["objects"] = content[PACKED_KEY]["objects"][:-1]
    reply = Message(content, reply_to=request)
    out = unpack_reply(reply)
    assert out.has_error() and "malformed packed reply" in out.error.reason
    assert out.metadata.reply_to_message_id == request.metadata.message_id
    good = unpack_reply(Message(pack(_content()), reply_to=request))
    assert not good.has_error() and list(good.content["arrays"].keys()) == list(_weights())


class _EchoLink(Grid):
    """The far side of a grid, in memory: each pushed message is answered by `packed_content_mod` + `_echo`."""

    def __init__(self):
        self.pushed, self.replies = [], {}

    def set_run(self, run):
        pass

    @property
    def run(self):
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        raise NotImplementedError

    def get_node_ids(self):
        return [1]

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message_id = message.metadata.__dict__["_message_id"] = message.object_id
            self.pushed.append(is_packed(message.content))  # as it travels
            context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
            self.replies[message_id] = packed_content_mod(message, context, _echo)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids):
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def send_and_receive(self, messages, *, timeout=None):
        raise NotImplementedError


def test_prompt_grid_packs_what_it_sends_unpacks_replies_and_times_each_exchange():
    link = _EchoLink()
    grid = PromptGrid(link, interval=0.01)
    replies = list(grid.send_and_receive([Message(_content(), dst_node_id=1, message_type="train")], timeout=5))
    assert link.pushed == [True]  # what travelled
    assert len(replies) == 1 and not is_packed(replies[0].content)  # what the strategy sees
    assert list(replies[0].content["arrays"].keys()) == list(_weights())
    assert np.array_equal(replies[0].content["arrays"]["net.0.weight"].numpy(), _weights()["net.0.weight"] * 2)
    [exchange] = grid.exchanges
    assert (exchange.message_type, exchange.messages, exchange.replies) == ("train", 1, 1)
    assert 0 <= exchange.push_seconds <= exchange.seconds < 5
