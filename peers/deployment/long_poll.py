"""Long polling for the SuperLink's pull requests: an empty answer waits for the next push first.

Flower's SuperNodes and ServerApp learn of new messages and objects only by
asking: a SuperNode asks the Fleet API for its next message, and for each object of a
message its sender has not pushed yet; the ServerApp asks the Runtime API for its
replies and their objects. Every "nothing yet" answer is followed by a pause and the
same request again. With three SuperNodes and a ServerApp asking every 50 ms, most of
the SuperLink's work in a deployed round was answering "nothing yet" (0.9 s of its
CPU per round, on a 2-core host), and every answer could be up to one pause late.

`LongPoll` wraps the SuperLink's pull and push handlers
(`fedsilo.peers.flower_compat.superlink_handlers` installs it on Flower's). When a handler's answer is empty
(no message, or an object preregistered but not yet pushed), the request's thread
waits until a push handler has stored what it waits for (`Arrivals`, by key: the
ServerApp's messages for a SuperNode's pull, a SuperNode's messages for the
ServerApp's, the one object for an object pull) and asks the handler again, until the
answer is not empty or `hold_seconds` have passed; then it answers as the handler
did. Replies the SuperLink makes up itself (for a node gone offline, a message that
expired) come with no push: they are found by the next pull, at most `hold_seconds`
late. An answer is therefore one that the same request, sent a little
later, would have had: same handlers, same state, same protocol, no client change.
Repeating an empty pull changes no state in Flower 1.42 (messages are marked
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
from collections.abc import Callable, Hashable
from typing import Any

DEFAULT_HOLD_SECONDS = 1.0
DEFAULT_MAX_HOLDERS = 24  # below the 40 threads of the SuperLink's (anyio's default) thread pool

Key = Hashable
KeyOf = Callable[[tuple[Any, ...], dict[str, Any]], Key]


class _Channel:
    __slots__ = ("changed", "count", "watchers")

    def __init__(self, lock: threading.Lock) -> None:
        self.changed = threading.Condition(lock)
        self.count = 0
        self.watchers = 0


class Arrivals:
    """Per key (what a pull waits for: new messages, one object), a count of pushes, which held pulls wait on.

    A key's channel exists only while some pull watches it, so pushes nobody waits
    for cost one dictionary lookup and memory stays bounded by the pulls in flight.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[Key, _Channel] = {}

    def watch(self, key: Key) -> tuple[_Channel, int]:
        """Start watching `key`: its channel and its count now (read before the handler looks)."""
        with self._lock:
            channel = self._channels.get(key)
            if channel is None:
                channel = self._channels[key] = _Channel(self._lock)
            channel.watchers += 1
            return channel, channel.count

    def unwatch(self, key: Key, channel: _Channel) -> None:
        with self._lock:
            channel.watchers -= 1
            if channel.watchers == 0 and self._channels.get(key) is channel:
                del self._channels[key]

    def arrived(self, key: Key) -> None:
        with self._lock:
            channel = self._channels.get(key)
            if channel is not None:
                channel.count += 1
                channel.changed.notify_all()

    def wait_after(self, channel: _Channel, count: int, timeout: float) -> int | None:
        """Wait until `channel` counted a push after `count`: the new count, or None after `timeout` seconds."""
        with self._lock:
            if channel.changed.wait_for(lambda: channel.count != count, timeout):
                return channel.count
            return None


class LongPoll:
    """Wraps push handlers to announce what they stored, and pull handlers to wait for it when their answer is empty."""

    def __init__(self, hold_seconds: float = DEFAULT_HOLD_SECONDS, max_holders: int = DEFAULT_MAX_HOLDERS) -> None:
        self.hold_seconds = hold_seconds
        self.arrivals = Arrivals()
        self._holders = threading.BoundedSemaphore(max_holders)

    def push(self, handler: Callable[..., Any], key_of: KeyOf) -> Callable[..., Any]:
        """`handler`, announcing `key_of(args, kwargs)` after each call (also a failed one: waiters ask again)."""

        @functools.wraps(handler)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            finally:
                self.arrivals.arrived(key_of(args, kwargs))

        return wrapped

    def pull(self, handler: Callable[..., Any], empty: Callable[[Any], bool], key_of: KeyOf) -> Callable[..., Any]:
        """`handler`, whose answers for which `empty` is true wait for a push of `key_of(args, kwargs)`."""

        @functools.wraps(handler)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            key = key_of(args, kwargs)
            channel, seen = self.arrivals.watch(key)
            try:
                answer = handler(*args, **kwargs)
                if not empty(answer) or not self._holders.acquire(blocking=False):
                    return answer
                try:
                    deadline = time.monotonic() + self.hold_seconds
                    while empty(answer) and (left := deadline - time.monotonic()) > 0:
                        count = self.arrivals.wait_after(channel, seen, left)
                        if count is None:
                            break
                        seen = count
                        answer = handler(*args, **kwargs)
                    return answer
                finally:
                    self._holders.release()
            finally:
                self.arrivals.unwatch(key, channel)

        return wrapped
