"""Flower's Simulation Engine, given an app directory: `flwr.simulation.run_simulation._run_simulation`.

Flower 1.42's public `run_simulation(server_app, client_app, num_supernodes,
backend_name, backend_config, enable_tf_gpu_growth, verbose_logging)` takes no run
config and no app directory. The private function it delegates to takes `app_dir`
and `is_app=True`, and then reads the run config from the Flower App descriptor
(`pyproject.toml`) in that directory, as `flwr run` does: that is how a simulated
ClientApp gets the job's run config exactly as a deployed one does.

`prompt_dispatch` rebinds `flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue`
for the length of a block: the engine's one thread that hands each node its next message
waits 0.1 s between passes, so every exchange waits 50 ms on average before a Ray worker
even sees it. A conversation of many short exchanges (split learning: two per batch)
spends most of its time there. The replacement is the same loop with another wait.
Would go with: a dispatch-interval setting of the Simulation Engine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flwr.clientapp import ClientApp
from flwr.common import EventType
from flwr.common.logger import LOGGER_NAME
from flwr.server.superlink.fleet.vce import vce_api
from flwr.serverapp import ServerApp
from flwr.simulation.run_simulation import _run_simulation


def flower_logger() -> logging.Logger:
    """The logger Flower writes its own messages to."""
    return logging.getLogger(LOGGER_NAME)


def run_app_simulation(
    server_app: ServerApp,
    client_app: ClientApp,
    num_supernodes: int,
    backend_config: dict[str, Any],
    app_dir: Path,
    verbose: bool,
) -> None:
    """Run `server_app` against `num_supernodes` virtual SuperNodes (Ray) running `client_app`.

    The run config is the one of the Flower App descriptor in `app_dir`.
    """
    _run_simulation(
        num_supernodes=num_supernodes,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=client_app,
        server_app=server_app,
        backend_name="ray",
        backend_config=backend_config,
        app_dir=str(app_dir),
        is_app=True,
        verbose_logging=verbose,
    )


@contextmanager
def prompt_dispatch(interval: float) -> Iterator[None]:
    """Within the block, the engine hands out messages every `interval` seconds instead of 0.1 s (module docstring).

    Costs one pass over the nodes' queued messages per `interval` in this process: for a few
    nodes (a vertical job's parties) nothing; not for a thousand simulated banks.
    """
    original = vce_api.add_messages_to_queue

    def add_messages_to_queue(state, queue, nodes_mapping, f_stop) -> None:  # Flower's loop, another wait
        while not f_stop.is_set():
            for node_id in nodes_mapping.keys():
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
            f_stop.wait(interval)

    vce_api.add_messages_to_queue = add_messages_to_queue
    try:
        yield
    finally:
        vce_api.add_messages_to_queue = original
