"""Contract of `fedsilo.peers.flower_compat.inline_objects` with Flower's message protos, object trees and LinkState.

The carried objects must reach exactly the store Flower's own object pushes reach, under
the same checks (a push session, a preregistered id, bytes that hash to it); anything
that fails a check, or is too big, must take Flower's own path, never be stored. The
real SuperLink handlers are exercised end to end by every deployed test
(`tests/peers/test_deployment.py`, `tests/peers/daemon/test_vertical_split_e2e.py`).
"""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.app.message import remove_content_from_message
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.fleet_pb2 import (  # pylint: disable=no-name-in-module  # protobuf-generated
    PullMessagesResponse,
    PushMessagesRequest,
    PushMessagesResponse,
)
from flwr.server.superlink.linkstate.linkstate_factory import LinkStateFactory
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID, TaskType
from flwr.supercore.inflatable.inflatable_object import get_object_tree
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation.noop_federation_manager import NoOpFederationManager

from fedsilo.peers.flower_compat import inline_objects
from fedsilo.peers.flower_compat.inline_objects import (
    ARRIVED,
    CARRIER,
    carried_pull,
    carried_push,
    carrier,
    carrying,
    keep_arrived,
    serve_arrived_first,
    take_carrier,
)
from fedsilo.peers.flower_compat.objects import deflated_tree

RUN_ID = 7


@pytest.fixture(autouse=True)
def _identity():
    """A Message made outside a task needs Flower's task identity (a ServerApp's is set by Flower)."""
    saved = TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = RUN_ID, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


def _message(size: int = 8, run_id: int = RUN_ID) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.arange(size, dtype=np.float32))}),
            "config": ConfigRecord({"stage": "embed"}),
        }
    )
    message = Message(content, dst_node_id=5, message_type="train")
    message.metadata.__dict__["_run_id"] = run_id
    message.metadata.__dict__["_message_id"] = message.object_id
    return message


def _proto(message: Message):
    carried = carrying(message)
    assert carried is not None
    return message_to_proto(carried)


def test_a_carried_message_yields_every_object_of_its_tree_and_an_empty_content():
    message = _message()
    proto, tree = _proto(message), get_object_tree(message)
    objects = take_carrier(proto, tree)
    assert objects == deflated_tree(message)  # the root included
    assert proto.HasField("content") and not proto.content.ByteSize()
    assert message_from_proto(proto).content == RecordDict()  # what Flower's handlers expect of a message
    assert message_from_proto(proto).metadata.message_id == message.metadata.message_id


def test_altered_bytes_and_objects_outside_the_tree_are_dropped():
    message, other = _message(), _message(3)
    objects = deflated_tree(message)
    victim = next(oid for oid in objects if oid != message.object_id)
    forged = {**objects, victim: objects[victim] + b"\x00", **deflated_tree(other)}
    proto = message_to_proto(remove_content_from_message(message))
    proto.content.CopyFrom(message_to_proto(Message(carrier(forged), dst_node_id=5, message_type="train")).content)
    kept = take_carrier(proto, get_object_tree(message))
    assert set(kept) == set(objects) - {victim}  # nothing of the other message, not the altered object


def test_a_content_that_is_not_a_carrier_carries_nothing():
    message = _message()
    proto = message_to_proto(message)  # Flower's content, not a carrier
    assert take_carrier(proto, get_object_tree(message)) == {}
    odd = RecordDict({CARRIER: ConfigRecord({"ids": ["a"], "objects": []})})  # lengths differ
    proto.content.CopyFrom(message_to_proto(Message(odd, dst_node_id=5, message_type="train")).content)
    assert take_carrier(proto, get_object_tree(message)) == {}


def test_a_message_above_the_limit_or_an_error_is_not_carried(monkeypatch):
    message = _message(64)
    monkeypatch.setattr(inline_objects, "INLINE_LIMIT", sum(map(len, deflated_tree(message).values())) - 1)
    assert carrying(message) is None
    assert carrying(_message(1)) is not None


def _state():
    """Flower's in-memory LinkState (a job's SuperLink's) with one run, and a message of that run."""
    state = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()).state()
    run_id = state.create_run(None, None, None, {}, NOOP_FEDERATION_ID, None, None, TaskType.CLIENT_APP)
    return state, run_id, _message(run_id=run_id)


def _push_handler(request, state):
    """What Flower's push handlers do for the objects: a push session, the tree preregistered, the missing ids."""
    session = state.start_session(request.messages_list[0].metadata.run_id)
    missing = state.preregister_object_tree(request.message_object_trees[0], session)
    assert not request.messages_list[0].content.ByteSize()  # the handler never sees the carrier
    return PushMessagesResponse(objects_to_push=missing, session_id=session)


def test_a_push_stores_the_carried_objects_in_flowers_store_and_asks_for_none():
    state, run_id, message = _state()
    request = PushMessagesRequest(messages_list=[_proto(message)], message_object_trees=[get_object_tree(message)])
    response = carried_push(_push_handler, record_traffic=True)(request=request, state=state)
    assert list(response.objects_to_push) == []
    for oid, body in deflated_tree(message).items():
        assert state.get_object(run_id, oid) == body


def test_a_push_asks_for_what_its_carrier_lacked_and_stores_no_forgery():
    state, run_id, message = _state()
    objects = deflated_tree(message)
    victim = next(oid for oid in objects if oid != message.object_id)
    proto = message_to_proto(remove_content_from_message(message))
    forged = {**objects, victim: objects[victim][:-1] + b"\x7f"}
    proto.content.CopyFrom(message_to_proto(Message(carrier(forged), dst_node_id=5, message_type="train")).content)
    request = PushMessagesRequest(messages_list=[proto], message_object_trees=[get_object_tree(message)])
    response = carried_push(_push_handler)(request=request, state=state)
    assert list(response.objects_to_push) == [victim]  # Flower's path: the pusher sends it itself
    assert state.get_object(run_id, victim) == b""  # preregistered, not available: the forgery was not stored


def test_a_pull_carries_a_message_only_once_all_its_objects_are_stored():
    state, run_id, message = _state()
    objects = deflated_tree(message)
    session = state.start_session(run_id)
    state.preregister_object_tree(get_object_tree(message), session)
    proto = message_to_proto(remove_content_from_message(message))

    def pull_handler(request, state):
        return PullMessagesResponse(messages_list=[proto], message_object_trees=[get_object_tree(message)])

    last = sorted(objects)[-1]
    for oid in sorted(objects)[:-1]:
        assert state.store_object(run_id, session, oid, objects[oid])
    response = carried_pull(pull_handler)(request=None, state=state)
    assert not response.messages_list[0].content.ByteSize()  # one object missing: Flower's path
    assert state.store_object(run_id, session, last, objects[last])
    response = carried_pull(pull_handler)(request=None, state=state)
    assert take_carrier(response.messages_list[0], response.message_object_trees[0]) == objects
    assert all(state.get_object(run_id, oid) is None for oid in objects)  # let go, as the receipt would


def test_a_client_pull_takes_carried_objects_first_and_asks_the_superlink_only_for_the_rest():
    message = _message()
    objects = deflated_tree(message)
    proto = _proto(message)
    response = keep_arrived(
        lambda _request: PullMessagesResponse(messages_list=[proto], message_object_trees=[get_object_tree(message)])
    )(None)
    assert not response.messages_list[0].content.ByteSize()
    assert ARRIVED.whole(message.object_id)  # its receipt need not be sent
    asked = []

    def flower_pull(object_ids, pull_object_fn, **_kwargs):
        asked.extend(object_ids)
        return {oid: pull_object_fn(oid) for oid in object_ids}

    extra = deflated_tree(_message(2))
    wanted = [*objects, *extra]
    got = serve_arrived_first(flower_pull)(wanted, lambda oid: extra[oid])
    assert got == {**objects, **extra}
    assert sorted(asked) == sorted(set(extra) - set(objects))  # only what did not arrive carried
    assert ARRIVED.take(objects) == objects  # still there for another message of the same pull


def test_an_object_two_replies_share_serves_both():
    """Two replies of one pull whose trees share an object (same bytes, same id): it is carried in both
    carriers but kept once, and the SuperLink let go of it; both replies must still get it."""
    first, second = _message(), _message(3)  # both hold the same ConfigRecord
    shared = set(deflated_tree(first)) & set(deflated_tree(second))
    assert shared
    protos = [_proto(first), _proto(second)]
    trees = [get_object_tree(first), get_object_tree(second)]
    keep_arrived(lambda _request: PullMessagesResponse(messages_list=protos, message_object_trees=trees))(None)

    def superlink_has_nothing(object_ids, pull_object_fn, **_kwargs):
        raise AssertionError(f"asked the SuperLink for {object_ids}")

    pull = serve_arrived_first(superlink_has_nothing)
    assert pull(list(deflated_tree(first)), None) == deflated_tree(first)
    assert pull(list(deflated_tree(second)), None) == deflated_tree(second)


def test_a_message_carried_in_part_still_gets_its_receipt():
    message = _message()
    objects = deflated_tree(message)
    proto = message_to_proto(remove_content_from_message(message))
    partial = {oid: body for oid, body in objects.items() if oid != message.object_id}
    proto.content.CopyFrom(message_to_proto(Message(carrier(partial), dst_node_id=5, message_type="train")).content)

    def respond(_request):
        return PullMessagesResponse(messages_list=[proto], message_object_trees=[get_object_tree(message)])

    keep_arrived(respond)(None)
    assert not ARRIVED.whole(message.object_id)


def test_a_supernode_skips_the_receipt_of_a_message_carried_whole_only():
    from fedsilo.peers.flower_compat.supernode import ConfirmLater

    message = _message()
    proto = _proto(message)
    keep_arrived(
        lambda _request: PullMessagesResponse(messages_list=[proto], message_object_trees=[get_object_tree(message)])
    )(None)
    sent = []
    later = ConfirmLater()
    confirm = later(lambda run_id, message_id: sent.append(message_id))
    confirm(RUN_ID, message.object_id)
    confirm(RUN_ID, "another message")
    later._sender.shutdown(wait=True)
    assert sent == ["another message"]
