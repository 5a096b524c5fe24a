"""`flower-supernode`, with its polling waits shortened and a task posted once its message is whole.

Flower 1.41's SuperNode main loop (`flwr.supernode.start_client_internal`) sleeps a
fixed 3 s whenever the SuperLink has no message for it, and 0.5 s between checks for
its ClientApp's reply. A round of a secure job is five message exchanges (four
SecAgg+ stages and evaluation), so these waits, not the work, set a deployed round's
time; so does the retry backoff (1 s, doubling) with which it pulls a message's
objects that the SuperLink does not have yet. This entry point runs Flower's own
`flower_supernode()` unchanged, with every `time.sleep` of that one module capped at
`FEDSILO_SUPERNODE_POLL_SECONDS` (default 0.05 s; the SuperNode then asks the
SuperLink for work up to 20 times a second while idle) and its object-pull backoff
starting at that interval (doubling, capped at 4 times it). Nothing else differs:
same arguments, same protocol.

It also posts a message's ClientApp task once the message's objects are stored, not
before. Flower's `_pull_and_store_message` creates the task first and then pulls the
objects from the SuperLink, so the ClientApp acquires the task at once and retries its
own object pulls (each one served by this process, which is still pulling) until they
are there; in a deployed round that was five retries per message. Here the task is
created with Flower's own `create_task` arguments right after Flower's function has
pulled and confirmed the objects (`TaskAfterObjects`); a message whose objects fail to
arrive is dropped as Flower drops it, and never had a task.

Two waits are event-driven instead of polled. The loop's waits for its ClientApp's
reply (and the reply's objects) end as soon as this process stores a message or an
object (the ClientApp's pushes arrive in this process, through its Runtime API); the
50 ms cap stays as a fallback. And with `FEDSILO_CLIENTAPP_WAKE_PORT` set, every task
posted is announced by one UDP datagram to that port on 127.0.0.1, where the warm
ClientApp (`peers.deployment.warm_clientapp --wake-port`) waits instead of asking for
a task every 50 ms. The datagram carries nothing: it only makes the ClientApp ask
the Runtime API now, so a stray one costs one request.

The backoff does not start shorter on purpose. A SuperNode sees a message as soon as
the ServerApp has pushed it, before its objects; every retry is one more request the
SuperLink must serve while the ServerApp is still pushing those objects to it. With
three SuperNodes retrying from 10 ms, the host took 2-4 times as long to push a
round's messages as with retries from 50 ms, and rounds were slower (A/B on the
shared 2-core VM, `bench/deployed_round.py`: see bench/README.md).

Run: `python -m peers.deployment.supernode <flower-supernode arguments>`.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from typing import Any, Callable

# What `main` patches (the loop module's `time.sleep` calls, its `pull_objects` and its
# `_pull_and_store_message`; the in-memory NodeState's `store_message` and ObjectStore's
# `put`, to signal a stored reply) is Flower 1.41's code; another Flower may sleep or pull elsewhere, silently slower or
# broken. Re-read `flwr.supernode.start_client_internal` before widening this.
PINNED_FLOWER = "1.41."
POLL_ENV = "FEDSILO_SUPERNODE_POLL_SECONDS"
WAKE_PORT_ENV = "FEDSILO_CLIENTAPP_WAKE_PORT"
DEFAULT_POLL_SECONDS = 0.05
LOOPBACK = "127.0.0.1"


class CappedSleepTime:
    """The `time` module, except that `sleep` waits at most `cap` seconds, and ends when `wake` is set.

    `wake` is cleared when a sleep ends: the loop re-checks its state after every
    sleep, so a wake-up set before that check is never lost.
    """

    def __init__(self, cap: float, wake: threading.Event | None = None) -> None:
        self.cap = cap
        self.wake = wake

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        if self.wake is None:
            time.sleep(min(seconds, self.cap))
            return
        self.wake.wait(min(seconds, self.cap))
        self.wake.clear()


def setting_wakes(method: Callable[..., Any], wake: threading.Event) -> Callable[..., Any]:
    """`method`, which sets `wake` after every call."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            wake.set()

    return wrapped


class ClientAppWaker:
    """Announces a posted task to the warm ClientApp: one empty UDP datagram to `127.0.0.1:port`."""

    def __init__(self, port: int) -> None:
        self.address = (LOOPBACK, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def __call__(self) -> None:
        try:
            self.sock.sendto(b"", self.address)
        except OSError:  # the ClientApp is not listening (yet): it still polls
            pass


_HELD = object()  # the task id `TaskAfterObjects.create_task` hands back: no task exists yet


class TaskAfterObjects:
    """The SuperNode's NodeState as one `_pull_and_store_message` call sees it: its task is held back.

    `create_task` records its arguments and returns a placeholder; `finish_task` on
    the placeholder (Flower's path for a message whose objects could not be pulled)
    drops the held task; everything else is the state's. `post` then creates the
    held task, if any, in the real state.
    """

    def __init__(self, state: Any) -> None:
        self._state = state
        self.held: dict[str, Any] | None = None
        self.message_id: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)

    def create_task(self, **kwargs: Any) -> object:
        self.held = kwargs
        return _HELD

    def store_message(self, message: Any) -> Any:
        self.message_id = message.metadata.message_id
        return self._state.store_message(message)

    def finish_task(self, task_id: Any, *args: Any, **kwargs: Any) -> Any:
        if task_id is _HELD:
            self.held = None
            return True
        return self._state.finish_task(task_id, *args, **kwargs)

    def post(self, object_store: Any) -> bool:
        """Create the held task; False (and the message dropped) if the state refused it, as Flower does."""
        if self.held is None:
            return True
        if self._state.create_task(**self.held) is not None:
            return True
        if self.message_id is not None:  # a task id collision: Flower logs it and never processes the message
            self._state.delete_messages(message_ids=[self.message_id])
            object_store.delete(self.message_id)
        return False


def post_task_after_objects(pull_and_store: Callable[..., int | None],
                            on_posted: Callable[[], None] | None = None) -> Callable[..., int | None]:
    """Flower's `_pull_and_store_message`, with the message's task created after its objects are stored.

    `on_posted` is called after a task was created.
    """

    @functools.wraps(pull_and_store)
    def wrapped(*, state: Any, object_store: Any, **kwargs: Any) -> int | None:
        held = TaskAfterObjects(state)
        run_id = pull_and_store(state=held, object_store=object_store, **kwargs)
        if run_id is None:
            return None
        if not held.post(object_store):
            return None
        if held.held is not None and on_posted is not None:
            on_posted()
        return run_id

    return wrapped


def main() -> None:
    import flwr.supernode.start_client_internal as loop
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.supercore.version import package_version
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState
    from flwr.supernode.cli.flower_supernode import flower_supernode

    if not package_version.startswith(PINNED_FLOWER):
        raise SystemExit(f"peers.deployment.supernode patches Flower {PINNED_FLOWER}x's SuperNode loop, but Flower "
                         f"{package_version} is installed: install flwr {PINNED_FLOWER}x (pyproject.toml pins it)")

    poll = float(os.environ.get(POLL_ENV, DEFAULT_POLL_SECONDS))
    stored = threading.Event()  # a message or an object was stored in this SuperNode (e.g. the ClientApp's reply)
    InMemoryNodeState.store_message = setting_wakes(InMemoryNodeState.store_message, stored)  # type: ignore[method-assign]
    InMemoryObjectStore.put = setting_wakes(InMemoryObjectStore.put, stored)  # type: ignore[method-assign]
    loop.time = CappedSleepTime(poll, stored)  # type: ignore[assignment]
    loop.pull_objects = functools.partial(loop.pull_objects, initial_backoff=poll, backoff_cap=poll * 4)
    wake_port = os.environ.get(WAKE_PORT_ENV)
    loop._pull_and_store_message = post_task_after_objects(  # pylint: disable=protected-access
        loop._pull_and_store_message, ClientAppWaker(int(wake_port)) if wake_port else None)  # pylint: disable=protected-access
    flower_supernode()


if __name__ == "__main__":
    main()
