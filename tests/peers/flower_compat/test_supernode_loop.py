"""Contract of `fedsilo.peers.flower_compat.supernode` with Flower's SuperNode loop: each pulled message is
handled in the SuperNode's process.

Runs Flower's own `_pull_and_store_message` and `_push_messages` against a real
in-memory NodeState and ObjectStore; the SuperLink's side (receive, object pulls,
send) is played by the test.
"""

import time
from dataclasses import replace

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message import remove_content_from_message
from flwr.common.constant import ErrorCode
from flwr.supercore.constant import TaskType
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree, iterate_object_tree
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode import start_client_internal as loop
from flwr.supernode.nodestate import NodeStateFactory

from fedsilo.peers.flower_app import CLIENT_APP
from fedsilo.peers.flower_compat.in_process_clientapp import fab_client_app
from fedsilo.peers.flower_compat.supernode import handle_in_process

RUN_ID, NODE_ID, SERIES_ID = 7, 5, 3


class _Fab:
    def __init__(self, clientapp: str) -> None:
        import hashlib
        import io
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("pyproject.toml", f'[tool.flwr.app.components]\nclientapp = "{clientapp}"\n')
        self.content = buffer.getvalue()
        self.hash_str = hashlib.sha256(self.content).hexdigest()
        self.verifications = {}


def _node(clientapp: str = CLIENT_APP):
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1  # what a Message needs
    factory = NodeStateFactory(ObjectStoreFactory())
    state = factory.state()
    state.set_node_id(NODE_ID)
    fab = _Fab(clientapp)
    state.store_run(
        replace(
            Run.create_empty(RUN_ID), primary_task_type=TaskType.CLIENT_APP, fab_hash=fab.hash_str, series_id=SERIES_ID
        )
    )
    state.store_fab(fab)
    state.set_run_series_context(
        SERIES_ID, Context(run_id=RUN_ID, node_id=NODE_ID, node_config={}, state=RecordDict(), run_config={})
    )
    return state, factory.objectstore_factory.store()


@pytest.fixture()
def node():
    return _node()


def _incoming(x: int = 1):
    message = Message(RecordDict({"config": ConfigRecord({"x": x})}), dst_node_id=NODE_ID, message_type="train")
    message.metadata.__dict__["_run_id"] = RUN_ID
    message.metadata.__dict__["_message_id"] = message.object_id
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(message).items()}
    return remove_content_from_message(message), get_object_tree(message), contents


def _doubling_app(message: Message, context: Context) -> Message:
    """Replies with twice the config value, and counts its calls in the context."""
    calls = int(context.state.get("calls", ConfigRecord({"n": 0}))["n"]) + 1
    context.state["calls"] = ConfigRecord({"n": calls})
    return Message(
        RecordDict({"reply": ConfigRecord({"y": 2 * int(message.content["config"]["x"])})}), reply_to=message
    )


def _pull(state, store, incoming, app=_doubling_app, pull_object=None):
    wrapped = handle_in_process(loop._pull_and_store_message, app)
    message, tree, contents = incoming
    return wrapped(
        state=state,
        object_store=store,
        node_config={},
        receive=lambda: (message, tree),
        get_run=None,
        get_fab=None,
        pull_object=pull_object or (lambda run_id, oid: contents[oid]),
        confirm_message_received=lambda *a: None,
        trusted_entities=None,
    )


class _NoWaiting:
    """Flower's loop waits (`time.sleep`) only while no reply is stored: here that fails the test instead."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(_seconds):
        raise AssertionError("the SuperNode's loop found no stored reply to send")


def _sent(state, store) -> list[tuple[Message, dict[str, bytes]]]:
    """What Flower's `_push_messages` sends to the SuperLink now: (message, pushed objects) per reply."""
    sent = []

    def send(message, tree, _runtime):
        sent.append((message, {}))
        return {t.object_id for t in iterate_object_tree(tree)}, "session"

    def push_object(_run_id, _session, object_id, content):
        sent[-1][1][object_id] = content

    waiting, loop.time = loop.time, _NoWaiting()
    try:
        loop._push_messages(state=state, object_store=store, send=send, push_object=push_object)
    finally:
        loop.time = waiting
    return sent


def _inflate(message: Message, objects: dict[str, bytes]) -> Message:
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    return inflate_object_from_contents(message.metadata.message_id, dict(objects))


def test_a_message_is_answered_in_process_and_the_loop_sends_the_reply_at_once(node):
    state, store = node
    incoming = _incoming(21)
    assert _pull(state, store, incoming) == RUN_ID
    assert state.get_tasks(run_ids=[RUN_ID]) == []  # no task for an outside executor
    for object_id in incoming[2]:  # the message's objects are gone, as after ConfirmMessageReceived
        assert store.get(object_id) is None
    [(reply, objects)] = _sent(state, store)
    assert reply.metadata.reply_to_message_id == incoming[0].metadata.message_id
    assert _inflate(reply, objects).content["reply"]["y"] == 42
    assert state.get_messages_legacy(run_ids=[RUN_ID]) == []  # the loop cleaned up after sending
    assert state.get_run_series_context(SERIES_ID).state["calls"]["n"] == 1  # the context went back to the state


def test_the_context_carries_over_from_one_message_to_the_next(node):
    state, store = node
    for x in (1, 2):
        assert _pull(state, store, _incoming(x)) == RUN_ID
        _sent(state, store)
    assert state.get_run_series_context(SERIES_ID).state["calls"]["n"] == 2


def test_a_message_whose_objects_never_arrive_is_dropped_without_running_the_app(node, monkeypatch):
    state, store = node
    monkeypatch.setattr(loop, "pull_objects", lambda ids, pull_object_fn: pull_object_fn(next(iter(ids))))
    called = []

    def pull_object(run_id, object_id):
        raise RuntimeError("object unavailable")

    assert _pull(state, store, _incoming(), app=lambda **kw: called.append(kw), pull_object=pull_object) is None
    assert called == []
    assert state.get_tasks(run_ids=[RUN_ID]) == []
    assert state.get_messages_legacy(run_ids=[RUN_ID]) == []


def test_an_exception_in_the_clientapp_becomes_an_error_reply(node):
    state, store = node

    def failing(message, context):
        raise ValueError("bad update")

    incoming = _incoming()
    assert _pull(state, store, incoming, app=failing) == RUN_ID
    [(reply, objects)] = _sent(state, store)
    error = _inflate(reply, objects).error
    assert error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION and "bad update" in error.reason
    assert reply.metadata.reply_to_message_id == incoming[0].metadata.message_id


def test_a_run_whose_app_is_not_fedsilos_gets_an_error_reply_and_nothing_runs():
    state, store = _node(clientapp="evil.module:app")
    called = []
    assert _pull(state, store, _incoming(), app=lambda **kw: called.append(kw)) == RUN_ID
    [(reply, objects)] = _sent(state, store)
    error = _inflate(reply, objects).error
    assert called == []
    assert error.code == ErrorCode.LOAD_CLIENT_APP_EXCEPTION and "evil.module:app" in error.reason


def test_a_message_missing_from_the_store_is_dropped_and_nothing_is_left_to_send(node):
    state, store = node

    def lose_objects(pull_and_store):
        def wrapped(**kwargs):
            run_id = pull_and_store(**kwargs)
            for object_id in incoming[2]:
                kwargs["object_store"].delete(object_id)
            return run_id

        return wrapped

    incoming = _incoming()
    wrapped = handle_in_process(lose_objects(loop._pull_and_store_message), _doubling_app)
    message, tree, contents = incoming
    assert (
        wrapped(
            state=state,
            object_store=store,
            node_config={},
            receive=lambda: (message, tree),
            get_run=None,
            get_fab=None,
            pull_object=lambda run_id, oid: contents[oid],
            confirm_message_received=lambda *a: None,
            trusted_entities=None,
        )
        is None
    )
    assert state.get_messages_legacy(run_ids=[RUN_ID]) == []


def test_fab_client_app_reads_the_declared_component():
    assert fab_client_app(_Fab("a.b:app").content) == "a.b:app"


def test_the_loops_waits_are_capped():
    from fedsilo.peers.flower_compat.supernode import CappedSleepTime

    started = time.monotonic()
    CappedSleepTime(cap=0.05).sleep(3)  # Flower's idle wait between two pulls
    assert time.monotonic() - started < 1.0
    assert CappedSleepTime(cap=0.05).monotonic() > 0  # everything else is the time module's


def test_the_receipt_is_confirmed_in_the_background_and_a_failed_confirmation_drops_nothing(node, caplog):
    import threading

    from fedsilo.peers.flower_compat.supernode import ConfirmLater

    state, store = node
    incoming = _incoming(5)
    message, tree, contents = incoming
    release, confirmed = threading.Event(), []

    def slow_failing_confirm(run_id, message_id):
        release.wait(5)
        confirmed.append((run_id, message_id))
        raise ConnectionError("SuperLink unreachable")

    wrapped = handle_in_process(loop._pull_and_store_message, _doubling_app, ConfirmLater())
    assert (
        wrapped(
            state=state,
            object_store=store,
            node_config={},
            receive=lambda: (message, tree),
            get_run=None,
            get_fab=None,
            pull_object=lambda run_id, oid: contents[oid],
            confirm_message_received=slow_failing_confirm,
            trusted_entities=None,
        )
        == RUN_ID
    )
    assert confirmed == []  # the message was handled while the confirmation still waited
    [(reply, objects)] = _sent(state, store)
    assert _inflate(reply, objects).content["reply"]["y"] == 10
    with caplog.at_level("ERROR", logger="fedsilo.supernode"):
        release.set()
        for _ in range(100):
            if "could not confirm" in caplog.text:
                break
            time.sleep(0.02)
    assert confirmed == [(RUN_ID, message.metadata.message_id)]
    assert "could not confirm message" in caplog.text


# What the patch rebinds, as Flower's loop module holds it.


def test_the_loop_sleeps_through_its_module_global_time_and_pulls_through_pull_objects():
    import inspect

    assert loop.time is time
    assert {"initial_backoff", "backoff_cap"} <= set(inspect.signature(loop.pull_objects).parameters)
    uses = loop._pull_and_store_message.__code__.co_names
    assert "pull_objects" in uses  # called by its module-global name: the rebinding reaches it


def test_the_loop_calls_pull_and_store_with_the_keywords_the_wrapper_reads():
    import inspect

    parameters = inspect.signature(loop._pull_and_store_message).parameters
    assert {"state", "object_store", "confirm_message_received"} <= set(parameters)
    caller = inspect.getsource(loop.start_client_internal)
    assert "_pull_and_store_message(" in caller and "state=state" in caller and "object_store=store" in caller


def test_the_node_state_has_every_call_the_in_process_client_app_makes(node):
    state, store = node
    for name in (
        "get_run",
        "get_run_series_context",
        "set_run_series_context",
        "get_fab",
        "record_message_processing_start",
        "record_message_processing_end",
        "start_session",
        "store_message_and_object_tree",
        "store_object",
        "store_message",
        "create_task",
        "finish_task",
        "delete_messages",
    ):
        assert callable(getattr(state, name)), name
    for name in ("get_object_tree", "get", "delete"):
        assert callable(getattr(store, name)), name


def test_patch_loop_rebinds_the_loops_names_and_the_connections(monkeypatch):
    import flwr.supernode.fleet_http_connection as connection
    from flwr.supernode.fleet_http_client import FleetHttpClient

    from fedsilo.peers.flower_compat.supernode import CappedSleepTime, patch_loop

    for name in ("time", "pull_objects", "_pull_and_store_message", "_push_messages"):
        monkeypatch.setattr(loop, name, getattr(loop, name))  # restored after the test
    monkeypatch.setattr(connection, "remove_content_from_message", connection.remove_content_from_message)
    monkeypatch.setattr(FleetHttpClient, "PullMessages", FleetHttpClient.PullMessages)
    original_pull, original_push = loop._pull_and_store_message, loop._push_messages
    original_strip, original_client_pull = connection.remove_content_from_message, FleetHttpClient.PullMessages
    patch_loop(_doubling_app, poll=0.05)
    assert isinstance(loop.time, CappedSleepTime) and loop.time.cap == 0.05
    assert loop.pull_objects.fedsilo_serves_arrived
    assert loop.pull_objects.__wrapped__.keywords == {"initial_backoff": 0.05, "backoff_cap": 0.2}
    assert loop._pull_and_store_message.__wrapped__ is original_pull
    assert loop._push_messages.__wrapped__ is original_push
    assert connection.remove_content_from_message.__wrapped__ is original_strip
    assert FleetHttpClient.PullMessages.__wrapped__ is original_client_pull
