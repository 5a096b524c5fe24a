"""Long polling for the SuperLink's pull requests: an empty answer waits for the next push first.

Flower 1.41's SuperNodes and ServerApp learn of new messages and objects only by
asking: a SuperNode asks the Fleet API for its next message, and for each object of a
message its sender has not pushed yet; the ServerApp asks the Runtime API for its
replies and their objects. Every "nothing yet" answer is followed by a pause and the
same request again. With three SuperNodes and a ServerApp asking every 50 ms, most of
the SuperLink's work in a deployed round was answering "nothing yet" (0.9 s of its
CPU per round, on a 2-core host), and every answer could be up to one pause late.

`LongPoll` wraps the SuperLink's pull handlers (plain functions of Flower's
`fleet_handlers` and `runtime_handlers` modules). When a handler's answer is empty
(no message, or an object preregistered but not yet pushed), the request's thread
waits until a push handler has stored something (`Arrivals`) and asks the handler
again, until the answer is not empty or `hold_seconds` have passed; then it answers
as the handler did. An answer is therefore one that the same request, sent a little
later, would have had: same handlers, same state, same protocol, no client change.
Repeating an empty pull changes no state in Flower 1.41 (messages are marked
delivered, and replies deleted, only when they are returned).

Held requests occupy threads of the SuperLink's thread pool, so at most
`max_holders` are held at once; any further empty answer is sent at once, as
without this module. Only empty answers wait: an unknown object (`object_found`
false) is answered at once, since no push makes it appear.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable

DEFAULT_HOLD_SECONDS = 1.0
DEFAULT_MAX_HOLDERS = 24  # below the 40 threads of the SuperLink's (anyio's default) thread pool


class Arrivals:
    """A counter of pushes stored, which held requests wait on."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count = 0

    @property
    def count(self) -> int:
        with self._changed:
            return self._count

    def arrived(self) -> None:
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    def wait_after(self, count: int, timeout: float) -> bool:
        """Wait until something arrived after `count` was read (True), or `timeout` seconds passed (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count != count, timeout)


class LongPoll:
    """Wraps push handlers to count arrivals and pull handlers to wait for one when their answer is empty."""

    def __init__(self, hold_seconds: float = DEFAULT_HOLD_SECONDS, max_holders: int = DEFAULT_MAX_HOLDERS) -> None:
        self.hold_seconds = hold_seconds
        self.arrivals = Arrivals()
        self._holders = threading.BoundedSemaphore(max_holders)

    def push(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """`handler`, counting an arrival after each call (also after a failed one: waiters just ask again)."""

        @functools.wraps(handler)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            finally:
                self.arrivals.arrived()

        return wrapped

    def pull(self, handler: Callable[..., Any], empty: Callable[[Any], bool]) -> Callable[..., Any]:
        """`handler`, whose answers for which `empty` is true wait for an arrival and are asked again."""

        @functools.wraps(handler)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            seen = self.arrivals.count
            answer = handler(*args, **kwargs)
            if not empty(answer) or not self._holders.acquire(blocking=False):
                return answer
            try:
                deadline = time.monotonic() + self.hold_seconds
                while empty(answer) and (left := deadline - time.monotonic()) > 0:
                    if not self.arrivals.wait_after(seen, left):
                        break
                    seen = self.arrivals.count
                    answer = handler(*args, **kwargs)
                return answer
            finally:
                self._holders.release()

        return wrapped


def no_messages(response: Any) -> bool:
    """A PullMessagesResponse (Fleet) or PullAppMessagesResponse (Runtime) without any message."""
    return len(response.messages_list) == 0


def object_pending(response: Any) -> bool:
    """A PullObjectResponse for an object that is preregistered but not pushed yet."""
    return bool(response.object_found) and not response.object_available


def install(fleet_handlers: Any, runtime_handlers: Any, long_poll: LongPoll) -> None:
    """Wrap the pull and push handlers of Flower 1.41's `fleet_handlers` and `runtime_handlers` modules."""
    for module in (fleet_handlers, runtime_handlers):
        module.push_messages = long_poll.push(module.push_messages)
        module.push_object = long_poll.push(module.push_object)
        module.pull_messages = long_poll.pull(module.pull_messages, no_messages)
        module.pull_object = long_poll.pull(module.pull_object, object_pending)
