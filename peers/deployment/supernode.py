"""The SuperNode a peer runs: Flower's `flower-supernode`, with short polling waits and the fedsilo ClientApp in process.

What is patched, and why, is `fedsilo.peers.flower_compat.supernode`; this module
only chooses the ClientApp and the poll interval: `FEDSILO_SUPERNODE_POLL_SECONDS`
(default 0.05 s; the SuperNode then asks the SuperLink for work up to 20 times a
second while idle, and retries an object not there yet from that interval on).

The backoff does not start shorter on purpose. A SuperNode sees a message as soon as
the ServerApp has pushed it, before its objects; every retry is one more request the
SuperLink must serve while the ServerApp is still pushing those objects to it. With
three SuperNodes retrying from 10 ms, the host took 2-4 times as long to push a
round's messages as with retries from 50 ms, and rounds were slower (A/B on the
shared 2-core VM, `bench/deployed_round.py`: see bench/README.md). The job's SuperLink
now holds a pull for an object not pushed yet until it arrives
(`fedsilo.peers.deployment.long_poll`), so these retries are rare.

With `FEDSILO_CLIENT_APP=vertical` (a split vertical job's party) it runs the vertical
parties' ClientApp instead (`fedsilo.peers.vertical.deployed.client_app`), and only for a run
whose app declares it.

Run: `python -m fedsilo.peers.deployment.supernode <flower-supernode arguments>`.
"""

from __future__ import annotations

import logging
import os

POLL_ENV = "FEDSILO_SUPERNODE_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 0.05


def main() -> None:
    from fedsilo.peers.flower_app import CLIENT_APP, CLIENT_APP_ENV, VERTICAL_CLIENT_APP
    from fedsilo.peers.flower_compat.supernode import run_supernode  # checks the installed Flower first

    if os.environ.get(CLIENT_APP_ENV) == "vertical":  # a split vertical job's party (its daemon says so)
        from fedsilo.peers.vertical.deployed import client_app as app
    else:
        from fedsilo.peers.client.app import app  # imports torch once, for the life of the process
    declared = VERTICAL_CLIENT_APP if os.environ.get(CLIENT_APP_ENV) == "vertical" else CLIENT_APP
    logging.getLogger("fedsilo").setLevel(logging.INFO)  # Flower's root handler writes it to the SuperNode's log
    run_supernode(app, float(os.environ.get(POLL_ENV, DEFAULT_POLL_SECONDS)), declared)


if __name__ == "__main__":
    main()
