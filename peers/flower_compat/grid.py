"""The ServerApp's grids: which engine a grid belongs to, and `HttpGrid`'s object-pull backoff.

Flower hands a ServerApp an `InMemoryGrid` under the Simulation Engine and an
`HttpGrid` under the Deployment Engine; neither class is public (`flwr.serverapp`
exports only the abstract `Grid`), and a ServerApp is not told which engine runs it.
The job host wraps each in its own prompt grid (`fedsilo.peers.server.host`).

`HttpGrid` pulls a reply's objects through `pull_objects`, imported into its module
(`flwr.superlink.grid.http_grid`) from `flwr.supercore.inflatable` and called there by
its module-global name, with Flower's retry backoff (1 s, doubling) for an object
listed before it arrived. `prompt_object_pulls` rebinds that name, once per process,
so retries start at `interval` and are capped at 4 × `interval`, and gives up a reply
whose objects have not all arrived `OBJECT_WAIT_SECONDS` after it was listed (Flower waits
up to 500 tries or 2 h). A reply is listed once its sender pushed the message, and a live
sender pushes the message's objects right after it; a sender killed in between never
does, and Flower's wait for them held the whole round. Given up, the reply becomes
Flower's own error reply (`MESSAGE_UNAVAILABLE`): the strategy counts the sender as a
dropout of that exchange.

`carry_small_messages` makes `HttpGrid` push a small message's objects inside its
PushMessages request and take the objects a pulled reply carries before asking for any
(`fedsilo.peers.flower_compat.inline_objects`): it rebinds the module's
`remove_content_from_message` (what `_try_push_messages` puts in the message proto) and
`pull_objects`, and `RuntimeHttpClient.PullMessages`. It also sends `HttpGrid`'s receipt of
each reply (`ConfirmMessageReceived`, which only lets the SuperLink delete the reply's
objects) from a background thread instead of between two pulls, as a fedsilo SuperNode
does (`fedsilo.peers.flower_compat.supernode.ConfirmLater`), and none for a reply carried
whole (the SuperLink let go of its objects when it sent them).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.superlink.grid import http_grid
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from fedsilo.peers.flower_compat.inline_objects import ARRIVED, carrying, install_pulling

OBJECT_WAIT_SECONDS = 10.0
LOGGER = logging.getLogger("fedsilo.grid")

__all__ = [
    "OBJECT_WAIT_SECONDS",
    "Run",
    "carry_small_messages",
    "is_deployment_grid",
    "is_simulation_grid",
    "prompt_object_pulls",
]


def is_simulation_grid(grid: Grid) -> bool:
    """True for the Simulation Engine's grid."""
    return isinstance(grid, InMemoryGrid)


def is_deployment_grid(grid: Grid) -> bool:
    """True for the Deployment Engine's grid (the ServerApp talks to a SuperLink over HTTP)."""
    return isinstance(grid, http_grid.HttpGrid)


def prompt_object_pulls(interval: float) -> None:
    """Start `HttpGrid`'s object-pull retries at `interval` instead of 1 s, give up after
    `OBJECT_WAIT_SECONDS` (once per process)."""
    if not getattr(http_grid.pull_objects, "fedsilo_prompt", False):
        prompt = functools.partial(
            http_grid.pull_objects, initial_backoff=interval, backoff_cap=4 * interval, max_time=OBJECT_WAIT_SECONDS
        )
        prompt.fedsilo_prompt = True  # type: ignore[attr-defined]  # installed once per process
        http_grid.pull_objects = prompt


def carry_small_messages() -> None:
    """`HttpGrid` pushes small messages' objects inline and takes pulled replies' carried objects first (idempotent).

    Install after `prompt_object_pulls`: the carried objects are taken before its retries start.
    """
    from flwr.supercore.runtime.runtime_http_client import RuntimeHttpClient

    if not getattr(http_grid.remove_content_from_message, "fedsilo_carries", False):
        strip = http_grid.remove_content_from_message

        def carry_or_strip(message: Message) -> Message:
            return carrying(message) or strip(message)

        carry_or_strip.fedsilo_carries = True  # type: ignore[attr-defined]
        http_grid.remove_content_from_message = carry_or_strip
    install_pulling(http_grid, RuntimeHttpClient)
    if not getattr(RuntimeHttpClient.ConfirmMessageReceived, "fedsilo_later", False):
        RuntimeHttpClient.ConfirmMessageReceived = _confirm_later(RuntimeHttpClient.ConfirmMessageReceived)


def _confirm_later(confirm: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """`RuntimeHttpClient.ConfirmMessageReceived`, sent in order from one background thread; answers at once."""
    from flwr.proto.message_pb2 import ConfirmMessageReceivedResponse  # pylint: disable=no-name-in-module

    sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confirm")

    def send(client: Any, request: Any) -> None:
        try:
            confirm(client, request)
        except Exception:  # pylint: disable=broad-exception-caught  # the reply itself arrived whole
            LOGGER.exception("could not confirm reply %s to the SuperLink", request.message_object_id)

    @functools.wraps(confirm)
    def later(client: Any, request: Any) -> Any:
        if not ARRIVED.whole(request.message_object_id):  # carried whole: the SuperLink already let go of it
            sender.submit(send, client, request)
        return ConfirmMessageReceivedResponse()

    later.fedsilo_later = True  # type: ignore[attr-defined]
    return later
