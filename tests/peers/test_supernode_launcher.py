"""`peers.deployment.supernode`: a message's ClientApp task is posted once its objects are stored.

Runs Flower's own `_pull_and_store_message` against a real in-memory NodeState and
ObjectStore; the SuperLink's side (receive, object pulls) is played by the test.
"""

from dataclasses import replace

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.constant import TaskType
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode import start_client_internal as loop
from flwr.supernode.nodestate import NodeStateFactory
from flwr.app.message import remove_content_from_message

from peers.deployment.supernode import post_task_after_objects

RUN_ID = 7


@pytest.fixture()
def node():
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1  # what a Message needs
    factory = NodeStateFactory(ObjectStoreFactory())
    state = factory.state()
    state.set_node_id(5)
    state.store_run(replace(Run.create_empty(RUN_ID), primary_task_type=TaskType.CLIENT_APP))
    return state, factory.objectstore_factory.store()


def _incoming():
    message = Message(RecordDict({"config": ConfigRecord({"x": 1})}), dst_node_id=5, message_type="train")
    message.metadata.__dict__["_run_id"] = RUN_ID
    message.metadata.__dict__["_message_id"] = message.object_id
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(message).items()}
    return remove_content_from_message(message), get_object_tree(message), contents


def _pull(state, store, incoming, pull_object):
    wrapped = post_task_after_objects(loop._pull_and_store_message)  # pylint: disable=protected-access
    message, tree, _ = incoming
    return wrapped(state=state, object_store=store, node_config={}, receive=lambda: (message, tree),
                   get_run=None, get_fab=None, pull_object=pull_object, confirm_message_received=lambda *a: None,
                   trusted_entities=None)


def test_the_task_appears_only_after_every_object_is_stored(node):
    state, store = node
    incoming = _incoming()
    contents = incoming[2]
    tasks_while_pulling = []

    def pull_object(run_id, object_id):
        tasks_while_pulling.append(len(state.get_tasks(run_ids=[run_id])))
        return contents[object_id]

    run_id = _pull(state, store, incoming, pull_object)
    assert run_id == RUN_ID
    assert tasks_while_pulling == [0] * len(contents)  # the ClientApp could not acquire it before
    tasks = state.get_tasks(run_ids=[RUN_ID])
    assert len(tasks) == 1 and tasks[0].type == TaskType.CLIENT_APP
    assert all(store.get(oid) == data for oid, data in contents.items())


def test_a_message_whose_objects_never_arrive_gets_no_task_and_is_dropped(node, monkeypatch):
    state, store = node
    monkeypatch.setattr(loop, "pull_objects", lambda ids, pull_object_fn: pull_object_fn(next(iter(ids))))

    def pull_object(run_id, object_id):
        raise RuntimeError("object unavailable")

    run_id = _pull(state, store, _incoming(), pull_object)
    assert run_id is None
    assert state.get_tasks(run_ids=[RUN_ID]) == []
    assert state.get_messages_legacy(run_ids=[RUN_ID]) == []


def test_a_stored_reply_ends_the_loops_wait_at_once(node):
    import threading
    import time

    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    from peers.deployment.supernode import CappedSleepTime, setting_wakes

    state, _ = node
    stored = threading.Event()
    store_message = setting_wakes(InMemoryNodeState.store_message, stored)
    sleeper = CappedSleepTime(cap=5.0, wake=stored)
    reply = _incoming()[0]
    threading.Timer(0.05, lambda: store_message(state, reply)).start()
    started = time.monotonic()
    sleeper.sleep(3)  # Flower's loop: waiting for the ClientApp's reply
    assert time.monotonic() - started < 1.0
    assert not stored.is_set()  # cleared for the next wait


def test_a_posted_task_wakes_the_warm_clientapp(node):
    import socket
    import time

    from peers.deployment.join import free_udp_port
    from peers.deployment.supernode import ClientAppWaker
    from peers.deployment.warm_clientapp import WAKE_FALLBACK_SECONDS, TaskWaiter

    state, store = node
    port = free_udp_port()
    waiter = TaskWaiter(poll_seconds=0.05, wake_port=port)
    waker = ClientAppWaker(port)
    try:
        assert waiter.seconds == WAKE_FALLBACK_SECONDS  # no polling every 50 ms
        incoming = _incoming()
        wrapped = post_task_after_objects(loop._pull_and_store_message, waker)
        message, tree, contents = incoming
        assert wrapped(state=state, object_store=store, node_config={}, receive=lambda: (message, tree),
                       get_run=None, get_fab=None, pull_object=lambda run_id, oid: contents[oid],
                       confirm_message_received=lambda *a: None, trusted_entities=None) == RUN_ID
        started = time.monotonic()
        waiter.wait()
        assert time.monotonic() - started < WAKE_FALLBACK_SECONDS / 2
        started = time.monotonic()
        waiter.wait()  # the datagram was consumed: this one waits for the fallback
        assert time.monotonic() - started >= WAKE_FALLBACK_SECONDS * 0.9
    finally:
        waiter.close()
        waker.sock.close()


def test_a_heartbeat_the_supernode_refuses_after_the_task_closed_does_not_stop_the_warm_clientapp(node):
    """A late heartbeat (401: the SuperNode already closed the task) must not SIGINT the long-lived process."""
    import signal
    import threading
    import time

    import uvicorn
    from flwr.common.constant import SubStatus
    from flwr.supernode.main import create_app

    import httpx
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest  # pylint: disable=E0611

    from peers.deployment.host import free_port
    from peers.deployment.warm_clientapp import _client, task_heartbeat

    state, _ = node

    class _Factory:
        objectstore_factory = ObjectStoreFactory()

        def state(self):
            return state

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(state_factory=_Factory()), host="127.0.0.1", port=port,
                                           log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        while not server.started:
            time.sleep(0.01)
        task_id = state.create_task(task_type=TaskType.CLIENT_APP, run_id=RUN_ID, fab_hash="")
        token = state.claim_task(task_id)
        assert state.activate_task(task_id)  # what pull-task-input does
        client = _client(f"127.0.0.1:{port}", "flwr-clientapp", token, retry=False)
        beat = task_heartbeat(client)
        assert beat() is True  # a live task
        # push-task-output, racing the heartbeat thread: the task is finished and its token revoked
        assert state.finish_task(task_id, sub_status=SubStatus.COMPLETED, details="")
        with pytest.raises(httpx.HTTPStatusError) as refused:
            client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
        assert refused.value.response.status_code == 401
        assert beat() is True  # refused the same way, and nothing left to keep alive
        time.sleep(0.2)
        assert interrupted == []
        client.close()
    finally:
        signal.signal(signal.SIGINT, previous)
        server.should_exit = True
        thread.join(timeout=10)
