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


def test_the_dispatch_loop_is_a_module_global_with_the_arguments_prompt_dispatch_takes():
    """`run_api` starts its extractor thread from the module-global name, with (state, queue, mapping, f_stop)."""
    from flwr.server.superlink.fleet.vce import vce_api

    from fedsilo.peers.flower_compat.simulation import prompt_dispatch

    source = inspect.getsource(vce_api.run_api)
    assert "target=add_messages_to_queue" in source
    original = vce_api.add_messages_to_queue
    assert list(inspect.signature(original).parameters) == ["state", "queue", "nodes_mapping", "f_stop"]
    assert "f_stop.wait(0.1)" in inspect.getsource(original)  # the wait this replaces
    with prompt_dispatch(0.002):
        patched = vce_api.add_messages_to_queue
        assert patched is not original
    assert vce_api.add_messages_to_queue is original

    class State:  # the one LinkState call the loop makes
        def __init__(self):
            self.waiting = {7: ["first", "second"]}

        def get_message_ins(self, node_id, limit):
            return [self.waiting[node_id].pop(0)] if self.waiting[node_id] and limit == 1 else []

    import queue
    import threading
    import time

    delivered, stop = queue.Queue(), threading.Event()
    thread = threading.Thread(target=patched, args=(State(), delivered, {7: 0}, stop))
    started = time.monotonic()
    thread.start()
    got = [delivered.get(timeout=5), delivered.get(timeout=5)]
    elapsed = time.monotonic() - started
    stop.set()
    thread.join(timeout=5)
    assert got == ["first", "second"] and elapsed < 0.09  # Flower's loop needs ≥ 0.1 s for the second
