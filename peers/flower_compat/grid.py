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
"""

from __future__ import annotations

import functools

from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.superlink.grid import http_grid
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

OBJECT_WAIT_SECONDS = 10.0

__all__ = ["OBJECT_WAIT_SECONDS", "Run", "is_deployment_grid", "is_simulation_grid", "prompt_object_pulls"]


def is_simulation_grid(grid: Grid) -> bool:
    """True for the Simulation Engine's grid."""
    return isinstance(grid, InMemoryGrid)


def is_deployment_grid(grid: Grid) -> bool:
    """True for the Deployment Engine's grid (the ServerApp talks to a SuperLink over HTTP)."""
    return isinstance(grid, http_grid.HttpGrid)


def prompt_object_pulls(interval: float) -> None:
    """Start `HttpGrid`'s object-pull retries at `interval` instead of 1 s, give up after
    `OBJECT_WAIT_SECONDS` (once per process)."""
    if not isinstance(http_grid.pull_objects, functools.partial):
        http_grid.pull_objects = functools.partial(
            http_grid.pull_objects, initial_backoff=interval, backoff_cap=4 * interval, max_time=OBJECT_WAIT_SECONDS
        )
