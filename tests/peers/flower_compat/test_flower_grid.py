"""Contract of `fedsilo.peers.flower_compat.grid` with Flower's grids and their object pulls."""

import functools
import inspect
import time

import pytest
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.serverapp import Grid
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.superlink.federation.noop_federation_manager import NoOpFederationManager
from flwr.superlink.grid import http_grid
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from fedsilo.peers.flower_compat.grid import (
    OBJECT_WAIT_SECONDS,
    is_deployment_grid,
    is_simulation_grid,
    prompt_object_pulls,
)


def _in_memory_grid() -> InMemoryGrid:
    """The grid the Simulation Engine hands a ServerApp, built as `flwr.simulation.run_simulation` builds it."""
    return InMemoryGrid(LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()))


def test_each_engine_builds_the_grid_class_the_checks_name():
    import importlib

    simulation = importlib.import_module(
        "flwr.simulation.run_simulation"
    )  # the package exports a function by that name
    run_serverapp = importlib.import_module("flwr.superlink.runtime.run_serverapp")

    assert simulation.InMemoryGrid is InMemoryGrid  # what the Simulation Engine instantiates
    assert run_serverapp.HttpGrid is http_grid.HttpGrid  # what `flwr-serverapp` instantiates


def test_the_checks_tell_the_engines_grids_apart():
    simulated, deployed = _in_memory_grid(), http_grid.HttpGrid(token="t", insecure=True)
    assert isinstance(simulated, Grid) and isinstance(deployed, Grid)
    assert is_simulation_grid(simulated) and not is_deployment_grid(simulated)
    assert is_deployment_grid(deployed) and not is_simulation_grid(deployed)


def test_http_grid_pulls_objects_through_its_module_global_with_a_settable_backoff():
    parameters = inspect.signature(http_grid.pull_objects).parameters
    assert {"initial_backoff", "backoff_cap", "max_time"} <= set(parameters)
    callers = [
        name
        for name, member in vars(http_grid.HttpGrid).items()
        if "pull_objects" in getattr(getattr(member, "__code__", None), "co_names", ())
    ]
    assert callers, "HttpGrid no longer calls the module's pull_objects: the rebinding would do nothing"


def test_prompt_object_pulls_rebinds_once(monkeypatch):
    monkeypatch.setattr(http_grid, "pull_objects", http_grid.pull_objects)  # restored after the test
    original = http_grid.pull_objects
    prompt_object_pulls(0.01)
    prompt_object_pulls(0.5)  # a second grid in the process changes nothing
    assert isinstance(http_grid.pull_objects, functools.partial) and http_grid.pull_objects.func is original
    assert http_grid.pull_objects.keywords == {
        "initial_backoff": 0.01,
        "backoff_cap": 0.04,
        "max_time": OBJECT_WAIT_SECONDS,
    }


def test_a_reply_whose_objects_never_arrive_is_given_up_after_the_object_wait(monkeypatch):
    """A sender killed between pushing its message and its objects: the pull ends in ObjectPullError."""
    from flwr.supercore.inflatable.inflatable_utils import ObjectPullError, ObjectUnavailableError

    monkeypatch.setattr(http_grid, "pull_objects", http_grid.pull_objects)
    monkeypatch.setattr("fedsilo.peers.flower_compat.grid.OBJECT_WAIT_SECONDS", 0.3)
    prompt_object_pulls(0.01)

    def never(_object_id):
        raise ObjectUnavailableError(_object_id)

    started = time.monotonic()
    with pytest.raises(ObjectPullError):
        http_grid.pull_objects(object_ids=["a"], pull_object_fn=never)
    assert time.monotonic() - started < 2.0
