"""The job's SuperLink: Flower's `flower-superlink`, with a lean middleware stack for message routes and long polling.

What is patched, and why, is `fedsilo.peers.flower_compat.superlink_middleware` (the
middleware) and `fedsilo.peers.flower_compat.superlink_handlers` (the pull handlers
long-poll, `fedsilo.peers.deployment.long_poll`). Same arguments, same protocol, same
responses as `flower-superlink`.

Run: `python -m fedsilo.peers.deployment.superlink <flower-superlink arguments>`.
"""

from __future__ import annotations


def main() -> None:
    from fedsilo.peers.deployment.long_poll import LongPoll
    from fedsilo.peers.flower_compat.superlink_handlers import run_superlink  # checks the installed Flower first

    run_superlink(LongPoll())


if __name__ == "__main__":
    main()
