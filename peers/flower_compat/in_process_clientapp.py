"""The fedsilo ClientApp, run inside the SuperNode's own process: no Runtime API hop per message.

Flower 1.42's SuperNode never runs a ClientApp itself. It stores each message it
pulls as a task in its NodeState, and an executor outside the process (Flower's
SuperExec starting a `flwr-clientapp` process per task, or a long-lived one)
acquires the task and, over the SuperNode's local Runtime API, pulls the task input,
the message and each of its objects, confirms them, then pushes the reply, each of
its objects and the task output: about fifteen HTTP requests per message, each
served by the SuperNode's one process. On the 2-core host of `bench/deployed_round.py`
those requests, not the training, were most of a peer's part of a round.

`InProcessClientApp` performs the same steps with the same NodeState and ObjectStore
calls as the Runtime API handlers (`flwr.supernode.servicer.runtime.runtime_handlers`)
but as function calls, with the ClientApp imported once for the life of the process
(earlier Flower releases had this as the SuperNode's default isolation mode). The
message is inflated from the stored objects, which are then deleted (what
`ConfirmMessageReceived` does); the reply is stored with its object tree under a push
session (what `PushMessages` and `PushObject` do); the Context goes back to the state
(what `PushTaskOutput` does). The SuperNode's loop then finds the reply in its state
and sends it to the SuperLink as it sends any reply. A ClientApp exception becomes an
error reply, as in `flwr-clientapp`.

Only the fedsilo ClientApp runs: a run whose app (FAB) declares any other `clientapp`
gets an error reply, and nothing of the FAB is imported or installed. Nothing is
downloaded. Messages are handled one at a time, in the order the SuperNode pulls
them, as Flower's executors handle tasks.
"""

from __future__ import annotations

import io
import logging
import time
import tomllib
import zipfile
from collections.abc import Callable

from flwr.app import Error, Message

from fedsilo.peers.flower_app import CLIENT_APP
from fedsilo.peers.flower_compat.messages import ErrorCode, remove_content_from_message, set_message_id
from fedsilo.peers.flower_compat.objects import (
    get_all_nested_objects,
    get_object_tree,
    inflate,
    iterate_object_tree,
    no_object_id_recompute,
)

LOGGER = logging.getLogger("fedsilo.in_process_clientapp")

AppFn = Callable[..., Message]  # ClientApp.__call__(message=..., context=...)


class ClientAppRefused(Exception):
    """The run's app is not one this SuperNode runs."""


def fab_client_app(fab_content: bytes) -> str:
    """The `clientapp` reference a FAB (a zip holding the app's pyproject.toml) declares."""
    with zipfile.ZipFile(io.BytesIO(fab_content)) as archive:
        descriptor = tomllib.loads(archive.read("pyproject.toml").decode())
    return str(descriptor["tool"]["flwr"]["app"]["components"]["clientapp"])


class InProcessClientApp:
    """Runs `app` on the SuperNode's stored messages, storing each reply for the SuperNode to send.

    `state` is the SuperNode's NodeState, `store` its ObjectStore (the same one
    `state.object_store` serves). Thread-safety is the state's: calls are made from
    the SuperNode's loop thread, one message at a time.
    """

    def __init__(self, app: AppFn, state: object, store: object, declared: str = CLIENT_APP) -> None:
        self.app = app
        self.declared = declared  # the `clientapp` a run's app must declare: the one this SuperNode runs
        self.state = state
        self.store = store
        self._allowed_fabs: set[str] = set()  # FAB hashes already checked to declare the fedsilo ClientApp

    def handle(self, run_id: int, message_id: str) -> None:
        """Run the app on stored message `message_id` of `run_id` and store its reply (or an error reply)."""
        state = self.state
        run = state.get_run(run_id)
        context = None if run is None else state.get_run_series_context(run.series_id)
        if run is None or context is None:  # Flower's loop stores both before the message: a broken state
            raise RuntimeError(f"run {run_id} or its context is missing from the SuperNode's state")
        message = self._take_message(message_id)
        state.record_message_processing_start(message_id=message_id)
        try:
            self._check_fab(run.fab_hash)
            started = time.perf_counter()
            reply = self.app(message=message, context=context)
            LOGGER.info("%s handled in %.3f s", message.metadata.message_type, time.perf_counter() - started)
        except Exception as ex:  # pylint: disable=broad-exception-caught  # an error reply, like flwr-clientapp
            LOGGER.exception("ClientApp failed on a %s message", message.metadata.message_type)
            code = (
                ErrorCode.LOAD_CLIENT_APP_EXCEPTION
                if isinstance(ex, ClientAppRefused)
                else ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            )
            reply = Message(Error(code=code, reason=f"{type(ex)}:<'{ex}'>"), reply_to=message)
        state.record_message_processing_end(message_id=message_id)
        self._store_reply(run_id, reply)
        state.set_run_series_context(run.series_id, context)

    def _take_message(self, message_id: str) -> Message:
        """The whole message, inflated from the store as `flwr-clientapp` inflates it; its objects are then
        deleted (what ConfirmMessageReceived does)."""
        tree = self.store.get_object_tree(message_id)
        contents = {}
        for node in iterate_object_tree(tree):
            content = self.store.get(node.object_id)
            if not content:  # None (unknown) or b"" (preregistered, never stored)
                raise RuntimeError(f"object {node.object_id} of message {message_id} is not in the SuperNode's store")
            contents[node.object_id] = content
        message = inflate(message_id, contents)
        if not isinstance(message, Message):
            raise RuntimeError(f"object {message_id} in the SuperNode's store is not a message")
        set_message_id(message, message_id)  # as Flower does: the id is not in the deflated message
        self.store.delete(message_id)
        return message

    def _check_fab(self, fab_hash: str) -> None:
        if fab_hash in self._allowed_fabs:
            return
        fab = self.state.get_fab(fab_hash)
        if fab is None:
            raise ClientAppRefused(f"the run's app (FAB {fab_hash}) is not in the SuperNode's state")
        declared = fab_client_app(fab.content)
        if declared != self.declared:
            raise ClientAppRefused(f"this SuperNode runs only {self.declared}; the run's app declares {declared}")
        self._allowed_fabs.add(fab_hash)

    def _store_reply(self, run_id: int, reply: Message) -> None:
        """Store `reply` and its objects as the Runtime API's PushMessages and PushObject calls do."""
        set_message_id(reply, reply.object_id)
        with no_object_id_recompute():
            tree = get_object_tree(reply)
            objects = get_all_nested_objects(reply)
            session_id = self.state.start_session(run_id)
            stored, missing = self.state.store_message_and_object_tree(
                remove_content_from_message(reply), tree, session_id
            )
            if not stored:
                raise RuntimeError(f"the SuperNode's state refused the reply to {reply.metadata.reply_to_message_id}")
            for object_id in missing:
                self.state.store_object(run_id, session_id, object_id, objects[object_id].deflate())
