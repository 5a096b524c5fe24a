"""Flower's SuperNode loop (`flwr.supernode.start_client_internal`), patched: short waits, the ClientApp in process.

Flower 1.42's SuperNode main loop sleeps a fixed 3 s whenever the SuperLink has no
message for it, and pulls a message's objects that the SuperLink does not have yet
with a retry backoff of 1 s, doubling. A round of a secure job is five message
exchanges, so these waits, not the work, would set a deployed round's time. `run`
runs Flower's own `flower_supernode()`, with every `time.sleep` of that one module
capped at `poll` seconds (`CappedSleepTime`) and its object-pull backoff starting at
that interval (doubling, capped at 4 times it).

It also runs the ClientApp itself (`fedsilo.peers.flower_compat.in_process_clientapp`).
Flower's `_pull_and_store_message` would create a task for each message it has pulled
and stored, for an executor outside the process to run over the local Runtime API;
here the task is never created (`TaskCapture`), and once Flower's function has pulled
and stored the message's objects, the message is handled in this process and its
reply stored where the loop's next step (`_push_messages`) finds it at once and sends
it to the SuperLink. The message's receipt is confirmed to the SuperLink from a
background thread (`ConfirmLater`). A message whose objects fail to arrive is dropped
as Flower drops it; one the ClientApp cannot be run on (a broken state) is dropped
too, with an error in the log. Start it with `--isolation process` and a 127.0.0.1
Runtime API address: no executor is started, and none is needed.

Small messages' objects ride inside the loop's PushMessages and PullMessages requests
(`fedsilo.peers.flower_compat.inline_objects`): `_push_messages` hands Flower's `send` a
reply carrying its stored objects, `FleetHttpClient.PullMessages` keeps what a pulled
message carries, and `pull_objects` takes it from there first.

What this rebinds, all attributes of the loop module: `time` (the module the loop
sleeps through), `pull_objects` (imported there from `flwr.supercore.inflatable`),
`_pull_and_store_message` and `_push_messages` (called by the loop by their module-global
names, with keyword arguments only); and `FleetHttpClient.PullMessages` and
`remove_content_from_message` of `flwr.supernode.fleet_http_connection` (whose `send`
strips any content but a carrier). It also runs the loop's object pushes and pulls on
reused threads instead of a new thread pool per message
(`fedsilo.peers.flower_compat.object_pools`). Flower has no option for any of it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

LOGGER = logging.getLogger("fedsilo.supernode")


class CappedSleepTime:
    """The `time` module, except that `sleep` waits at most `cap` seconds."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))


_NO_TASK = object()  # the task id `TaskCapture.create_task` hands back: no task exists


class TaskCapture:
    """The SuperNode's NodeState as one `_pull_and_store_message` call sees it: no task is created.

    `create_task` records that Flower asked for one and returns a placeholder;
    `finish_task` on the placeholder (Flower's path for a message whose objects could
    not be pulled) forgets it; `store_message` records the message's id. Everything
    else is the state's.
    """

    def __init__(self, state: Any) -> None:
        self._state = state
        self.wanted_task = False
        self.message_id: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)

    def create_task(self, **_kwargs: Any) -> object:
        self.wanted_task = True
        return _NO_TASK

    def store_message(self, message: Any) -> Any:
        self.message_id = message.metadata.message_id
        return self._state.store_message(message)

    def finish_task(self, task_id: Any, *args: Any, **kwargs: Any) -> Any:
        if task_id is _NO_TASK:
            self.wanted_task = False
            return True
        return self._state.finish_task(task_id, *args, **kwargs)


class ConfirmLater:
    """Flower's `confirm_message_received(run_id, message_id)`, sent from a background thread.

    The confirmation only lets the SuperLink delete a message's objects once this
    SuperNode holds them; it answers nothing the ClientApp needs. Sent in line, it
    was one more request to the SuperLink between a message's last object and the
    start of its training (10-20 ms, over 100 ms when the SuperLink was busy).
    Confirmations go out in order, one at a time; one that fails is logged and the
    objects stay at the SuperLink until the run ends (Flower would instead have
    dropped the message it had already stored whole). A message whose every object was
    carried inline (`fedsilo.peers.flower_compat.inline_objects`) gets none: the SuperLink
    let go of its objects when it sent them.
    """

    def __init__(self) -> None:
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confirm")

    def __call__(self, confirm: Callable[[int, str], None]) -> Callable[[int, str], None]:
        from fedsilo.peers.flower_compat.inline_objects import ARRIVED

        def later(run_id: int, message_id: str) -> None:
            if ARRIVED.whole(message_id):  # carried whole: the SuperLink already let go of its objects
                return
            self._sender.submit(self._send, confirm, run_id, message_id)

        return later

    @staticmethod
    def _send(confirm: Callable[[int, str], None], run_id: int, message_id: str) -> None:
        try:
            confirm(run_id, message_id)
        except Exception:  # pylint: disable=broad-exception-caught  # the message itself was received whole
            LOGGER.exception("could not confirm message %s to the SuperLink", message_id)


def handle_in_process(
    pull_and_store: Callable[..., int | None],
    app: Callable[..., Any],
    confirm_later: ConfirmLater | None = None,
    declared: str | None = None,
) -> Callable[..., int | None]:
    """Flower's `_pull_and_store_message`, with the pulled message handled by `app` in this process.

    Returns what Flower's function returns (the run id, or None when nothing is to be
    sent); None too, with the message dropped, if the message could not be handled.
    With `confirm_later`, the message's receipt is confirmed to the SuperLink in the
    background (see `ConfirmLater`). `declared`: the `clientapp` reference a run's app must
    declare (default: the fedsilo ClientApp's, `fedsilo.peers.flower_app.CLIENT_APP`).
    """
    from fedsilo.peers.flower_app import CLIENT_APP
    from fedsilo.peers.flower_compat.in_process_clientapp import InProcessClientApp

    runners: dict[tuple[int, int], InProcessClientApp] = {}  # one per (state, store): the loop keeps its pair

    @functools.wraps(pull_and_store)
    def wrapped(*, state: Any, object_store: Any, **kwargs: Any) -> int | None:
        capture = TaskCapture(state)
        if confirm_later is not None:
            kwargs["confirm_message_received"] = confirm_later(kwargs["confirm_message_received"])
        run_id = pull_and_store(state=capture, object_store=object_store, **kwargs)
        if run_id is None or not capture.wanted_task or capture.message_id is None:
            return run_id  # nothing pulled, or Flower stored its own reply (a FAB that failed verification)
        try:
            key = (id(state), id(object_store))
            if key not in runners:
                runners[key] = InProcessClientApp(app, state, object_store, declared or CLIENT_APP)
            runners[key].handle(run_id, capture.message_id)
        except Exception:  # pylint: disable=broad-exception-caught  # a broken state: drop the message, as Flower does
            LOGGER.exception("message %s could not be handled; it is dropped", capture.message_id)
            state.delete_messages(message_ids=[capture.message_id])
            object_store.delete(capture.message_id)
            return None
        return run_id

    return wrapped


def carry_pushes(push_messages: Callable[..., None]) -> Callable[..., None]:
    """Flower's `_push_messages`, whose `send` gets each reply carrying its stored objects (when small enough).

    A reply with an object not stored whole yet goes as Flower sends it.
    """
    from fedsilo.peers.flower_compat.inline_objects import carrying
    from fedsilo.peers.flower_compat.objects import iterate_object_tree

    @functools.wraps(push_messages)
    def push(*, state: Any, object_store: Any, send: Callable[..., Any], push_object: Any) -> None:
        def send_carrying(message: Any, object_tree: Any, clientapp_runtime: float) -> Any:
            objects = {}
            for node in iterate_object_tree(object_tree):
                content = object_store.get(node.object_id)
                if not content:
                    return send(message, object_tree, clientapp_runtime)
                objects[node.object_id] = content
            return send(carrying(message, objects) or message, object_tree, clientapp_runtime)

        push_messages(state=state, object_store=object_store, send=send_carrying, push_object=push_object)

    return push


def _keep_carriers(strip: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`remove_content_from_message` for the Fleet connection's `send`: a carrier stays (it is the objects)."""
    from fedsilo.peers.flower_compat.inline_objects import is_carrier

    @functools.wraps(strip)
    def remove_content(message: Any) -> Any:
        return message if is_carrier(message.content) else strip(message)

    return remove_content


def patch_loop(app: Callable[..., Any], poll: float, declared: str | None = None) -> None:
    """Rebind the loop module's sleeps, object pulls and pushes and message handling (see the module docstring)."""
    import flwr.supernode.fleet_http_connection as connection
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.fleet_http_client import FleetHttpClient

    from fedsilo.peers.flower_compat.inline_objects import install_pulling
    from fedsilo.peers.flower_compat.object_pools import reuse_object_threads

    reuse_object_threads()  # a message's objects pushed and pulled on reused threads, not a new pool each
    loop.time = CappedSleepTime(poll)  # type: ignore[assignment]  # a stand-in for the module: only `sleep` differs
    loop.pull_objects = functools.partial(loop.pull_objects, initial_backoff=poll, backoff_cap=poll * 4)
    install_pulling(loop, FleetHttpClient)
    loop._pull_and_store_message = handle_in_process(loop._pull_and_store_message, app, ConfirmLater(), declared)
    loop._push_messages = carry_pushes(loop._push_messages)
    connection.remove_content_from_message = _keep_carriers(connection.remove_content_from_message)


def run_supernode(app: Callable[..., Any], poll: float, declared: str | None = None) -> None:
    """`flower-supernode` (its command-line arguments are this process's), with `app` run in process (the
    runs whose app declares `declared` as its `clientapp`; default the fedsilo ClientApp's)."""
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from fedsilo.peers.flower_compat.heartbeat import shorten_node_heartbeats

    patch_loop(app, poll, declared)
    shorten_node_heartbeats()
    flower_supernode()
