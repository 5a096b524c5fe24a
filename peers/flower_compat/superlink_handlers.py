"""The SuperLink's Fleet and Runtime API handlers, rebound to long-poll (`fedsilo.peers.deployment.long_poll`).

Flower 1.42's SuperLink routes call its handlers as attributes of two modules looked
up per request: the Fleet router calls `fleet_handlers.pull_messages(request=...,
state=...)` and its siblings; the Runtime router calls `handlers.pull_messages(request,
state, task)` on `app.state.runtime_handlers`, which is the `runtime_handlers` module
itself. Rebinding a module attribute therefore changes what every later request runs.
Flower offers no hook for it.

`install` wraps, in both modules, the message and object push handlers to announce
what they stored, and the pull handlers to wait for it when their answer is empty
(what "empty" means for Flower's protobuf answers: `no_messages`, `object_pending`).
Which push wakes which pull: a SuperNode's message pull waits for the ServerApp's next
push of messages; the ServerApp's pull of replies, for a SuperNode's next push of
messages; a pull of an object, for a push of that object (by either side).

Inside the long polling, the message push and pull handlers also carry small messages'
objects (`fedsilo.peers.flower_compat.inline_objects`): a push stores the objects its
messages carry before its waiters are woken, and every answer of a pull carries the
objects stored by then.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedsilo.peers.deployment.long_poll import LongPoll

INSTRUCTIONS = "instructions"  # messages from the ServerApp to SuperNodes (Runtime push, Fleet pull)
REPLIES = "replies"  # messages from SuperNodes to the ServerApp (Fleet push, Runtime pull)


def no_messages(response: Any) -> bool:
    """A PullMessagesResponse (Fleet) or PullAppMessagesResponse (Runtime) without any message."""
    return len(response.messages_list) == 0


def object_pending(response: Any) -> bool:
    """A PullObjectResponse for an object that is preregistered but not pushed yet."""
    return bool(response.object_found) and not response.object_available


def _request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The protobuf request of a handler call: Flower's routers pass it first, by position or as `request`."""
    return kwargs["request"] if "request" in kwargs else args[0]


def _object(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    return ("object", _request(args, kwargs).object_id)


def _instructions(_args: tuple[Any, ...], _kwargs: dict[str, Any]) -> Hashable:
    return INSTRUCTIONS


def _replies(_args: tuple[Any, ...], _kwargs: dict[str, Any]) -> Hashable:
    return REPLIES


def install(long_poll: LongPoll, fleet_handlers: Any = None, runtime_handlers: Any = None) -> None:
    """Wrap the pull and push handlers of Flower's `fleet_handlers` and `runtime_handlers` modules.

    The modules default to Flower's own; a test passes copies.
    """
    from flwr.superlink.servicer.fleet import fleet_handlers as flower_fleet
    from flwr.superlink.servicer.runtime import runtime_handlers as flower_runtime

    from fedsilo.peers.flower_compat.inline_objects import carried_pull, carried_push

    fleet_handlers = flower_fleet if fleet_handlers is None else fleet_handlers
    runtime_handlers = flower_runtime if runtime_handlers is None else runtime_handlers
    for module, traffic in ((fleet_handlers, True), (runtime_handlers, False)):  # Flower counts Fleet traffic only
        module.push_messages = carried_push(module.push_messages, record_traffic=traffic)
        module.pull_messages = carried_pull(module.pull_messages, record_traffic=traffic)
    runtime_handlers.push_messages = long_poll.push(runtime_handlers.push_messages, _instructions)
    fleet_handlers.pull_messages = long_poll.pull(fleet_handlers.pull_messages, no_messages, _instructions)
    fleet_handlers.push_messages = long_poll.push(fleet_handlers.push_messages, _replies)
    runtime_handlers.pull_messages = long_poll.pull(runtime_handlers.pull_messages, no_messages, _replies)
    for module in (fleet_handlers, runtime_handlers):
        module.push_object = long_poll.push(module.push_object, _object)
        module.pull_object = long_poll.pull(module.pull_object, object_pending, _object)


def run_superlink(long_poll: LongPoll) -> None:
    """`flower-superlink` (its command-line arguments are this process's), with the lean middleware and long polling."""
    from flwr.superlink.cli.flower_superlink import flower_superlink

    from fedsilo.peers.flower_compat import superlink_middleware
    from fedsilo.peers.flower_compat.heartbeat import accept_short_heartbeats

    superlink_middleware.install()
    accept_short_heartbeats()
    install(long_poll)
    flower_superlink()
