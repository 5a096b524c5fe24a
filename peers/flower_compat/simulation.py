"""Flower's Simulation Engine, given an app directory: `flwr.simulation.run_simulation._run_simulation`.

Flower 1.42's public `run_simulation(server_app, client_app, num_supernodes,
backend_name, backend_config, enable_tf_gpu_growth, verbose_logging)` takes no run
config and no app directory. The private function it delegates to takes `app_dir`
and `is_app=True`, and then reads the run config from the Flower App descriptor
(`pyproject.toml`) in that directory, as `flwr run` does: that is how a simulated
ClientApp gets the job's run config exactly as a deployed one does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flwr.clientapp import ClientApp
from flwr.common import EventType
from flwr.common.logger import LOGGER_NAME
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
