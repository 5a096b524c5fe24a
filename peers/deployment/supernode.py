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
starting at that interval (doubling, capped at 4 times it). Nothing else differs:
same arguments, same protocol.

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
import time
from typing import Any

# What `main` patches (the loop module's `time.sleep` calls and its `pull_objects`) is
# Flower 1.41's code; another Flower may sleep or pull elsewhere, silently slower or
# broken. Re-read `flwr.supernode.start_client_internal` before widening this.
PINNED_FLOWER = "1.41."
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
    from flwr.supercore.version import package_version
    from flwr.supernode.cli.flower_supernode import flower_supernode

    if not package_version.startswith(PINNED_FLOWER):
        raise SystemExit(f"peers.deployment.supernode patches Flower {PINNED_FLOWER}x's SuperNode loop, but Flower "
                         f"{package_version} is installed: install flwr {PINNED_FLOWER}x (pyproject.toml pins it)")

    poll = float(os.environ.get(POLL_ENV, DEFAULT_POLL_SECONDS))
    loop.time = CappedSleepTime(poll)  # type: ignore[assignment]
    loop.pull_objects = functools.partial(loop.pull_objects, initial_backoff=poll, backoff_cap=poll * 4)
    flower_supernode()


if __name__ == "__main__":
    main()
