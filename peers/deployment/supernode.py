"""`flower-supernode`, with its polling waits shortened.

Flower 1.41's SuperNode main loop (`flwr.supernode.start_client_internal`) sleeps a
fixed 3 s whenever the SuperLink has no message for it, and 0.5 s between checks for
its ClientApp's reply. A round of a secure job is five message exchanges (four
SecAgg+ stages and evaluation), so these waits, not the work, set a deployed round's
time; so does the retry backoff (1 s, doubling) with which it pulls a message's
objects that the SuperLink does not have yet. This entry point runs Flower's own
`flower_supernode()` unchanged, with every `time.sleep` of that one module capped at
`FEDSILO_SUPERNODE_POLL_SECONDS` (default 0.05 s; the SuperNode then asks the
SuperLink for work up to 20 times a second while idle) and its object-pull backoff
starting at a fifth of that. Nothing else differs: same arguments, same protocol.

Run: `python -m peers.deployment.supernode <flower-supernode arguments>`.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

POLL_ENV = "FEDSILO_SUPERNODE_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 0.05


class CappedSleepTime:
    """The `time` module, except that `sleep` waits at most `cap` seconds."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))


def main() -> None:
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli.flower_supernode import flower_supernode

    poll = float(os.environ.get(POLL_ENV, DEFAULT_POLL_SECONDS))
    loop.time = CappedSleepTime(poll)  # type: ignore[assignment]
    loop.pull_objects = functools.partial(loop.pull_objects, initial_backoff=poll / 5, backoff_cap=poll * 4)
    flower_supernode()


if __name__ == "__main__":
    main()
