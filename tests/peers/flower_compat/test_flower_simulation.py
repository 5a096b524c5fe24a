"""Contract of `fedsilo.peers.flower_compat.simulation` with Flower's Simulation Engine entry point.

The engine itself runs in tests/simulations/test_simulation_e2e.py (slow); here, what the
call relies on: the private function still takes the arguments it is given, and the
public `run_simulation` still takes no run config (else use it and delete the patch).
"""

import inspect
import logging

from flwr.common import EventType
from flwr.simulation import run_simulation
from flwr.simulation.run_simulation import _run_simulation

from fedsilo.peers.flower_compat.simulation import flower_logger


def test_the_private_entry_point_takes_the_app_directory_and_reads_it_as_an_app():
    signature = inspect.signature(_run_simulation)
    signature.bind(
        num_supernodes=2,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=None,
        server_app=None,
        backend_name="ray",
        backend_config={},
        app_dir="/app",
        is_app=True,
        verbose_logging=False,
    )
    assert signature.parameters["is_app"].default is False and signature.parameters["app_dir"].default == ""


def test_the_public_run_simulation_still_takes_no_run_config():
    """When this fails, Flower's public API takes a run config or app: use it and delete `run_app_simulation`."""
    parameters = set(inspect.signature(run_simulation).parameters)
    assert not parameters & {"run_config", "app_dir", "is_app"}


def test_flower_logs_to_the_logger_fedsilo_quiets():
    from flwr.common import logger

    assert flower_logger() is logger.FLOWER_LOGGER is logging.getLogger("flwr")
