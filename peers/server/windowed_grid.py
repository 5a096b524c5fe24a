"""A Grid that keeps few messages at a time in Flower's in-memory link state (Simulation Engine).

Flower 1.42's Simulation Engine hands messages to its Ray actors from one thread that,
every 0.1 s, asks the in-memory link state for each registered node's next message
(`vce_api.add_messages_to_queue`); each such query walks every message still in the
state (delivered or not, until its reply is pulled). One pass thus costs
nodes × messages in the state: with 1,000 virtual banks and a round's 100 messages it
takes about half a second of CPU, in the process that also runs the job host, so the
thread is busy for as long as an exchange lasts and competes with the actors for the
machine's cores. Secure aggregation has five exchanges per training round, plus
evaluation.

`WindowedGrid.send_and_receive` pushes an exchange's messages `window` at a time and
pushes the next ones as replies arrive (pulled every `interval` seconds), so the state
holds at most `window` of them and a pass costs `window / messages` of what it did.
Semantics are Flower's `send_and_receive`: every message is sent, replies are
collected until all arrived or `timeout` passed; a message still unsent at the timeout
is not sent and, like an unanswered one, gets no reply. Everything else is the
wrapped grid's (`PromptGrid`). Used by the job host under the Simulation Engine only:
under the Deployment Engine each SuperNode pulls its own messages and a window would
only delay them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

from fedsilo.peers.server.polling_grid import PromptGrid

DEFAULT_WINDOW = 24
DEFAULT_INTERVAL_SECONDS = 0.01


class WindowedGrid(PromptGrid):
    """`inner` with at most `window` messages of an exchange in flight (see module docstring)."""

    def __init__(self, inner: Grid, window: int = DEFAULT_WINDOW, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        super().__init__(inner, interval=interval)
        self.window = window

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        unsent = list(messages)
        unsent.reverse()  # pop() from the end sends them in the order given
        end = None if timeout is None else time.monotonic() + timeout
        pending: set[str] = set()
        replies: list[Message] = []
        while (unsent or pending) and (end is None or time.monotonic() < end):
            if unsent and len(pending) < self.window:
                batch = [unsent.pop() for _ in range(min(self.window - len(pending), len(unsent)))]
                pending.update(self.push_messages(batch))
            arrived = list(self.pull_messages(pending)) if pending else []
            replies.extend(arrived)
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if pending and not arrived:
                time.sleep(self.interval)
        return replies
