"""Runs a job on Flower's Simulation Engine (Ray actors, one virtual SuperNode per bank).

The ClientApp is the very one a real peer runs; its run config reaches it through a
Flower App descriptor (`fedsilo.peers.flower_app`) exactly as under the Deployment Engine.
A job with secure aggregation gets a simulated consortium (a CA, a signed manifest,
one key and certificate per bank, `fedsilo.peers.identity.round_keys`), so the banks sign and
verify SecAgg+ keys and survivor lists as deployed peers do, at the same cost.

Flower's public `run_simulation` takes no run config, so this runs the engine through
`fedsilo.peers.flower_compat.simulation`, which hands Flower the app directory that
holds the descriptor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedsilo.peers.flower_app import write_app_descriptor
from fedsilo.peers.flower_compat.simulation import flower_logger, run_app_simulation
from fedsilo.peers.identity.round_keys import SIMULATED_IDENTITY_KEY, SUITE_KEY, simulated_consortium
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE


@dataclass(frozen=True)
class EngineSettings:
    """Where and how wide the engine runs.

    `ray_address`: an existing Ray cluster (`HOST:PORT` of its head, or `auto`) to
    connect to; None starts a private one-machine Ray runtime with this machine's
    cores. `cpus_per_bank`: the Ray CPUs one virtual bank's actor claims, so a machine
    (or cluster) runs CPUs / cpus_per_bank banks at once; each bank's torch work is
    single-threaded (`limit_threads`), so 1.0 keeps every core busy with one bank.
    """

    ray_address: str | None = None
    cpus_per_bank: float = 1.0


def backend_config(settings: EngineSettings = EngineSettings()) -> dict[str, Any]:
    """Ray settings: `cpus_per_bank` per actor, quiet logs, no dashboard; a local
    runtime gets every core, a cluster brings its own resources."""
    init_args: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if settings.ray_address:
        init_args["address"] = settings.ray_address
    else:
        init_args.update(num_cpus=os.cpu_count() or 1, include_dashboard=False)
    return {"client_resources": {"num_cpus": settings.cpus_per_bank, "num_gpus": 0.0}, "init_args": init_args}


def run_flower_simulation(
    server_app: ServerApp,
    client_app: ClientApp,
    n_banks: int,
    run_config: Mapping[str, Any],
    app_dir: Path,
    version: str,
    settings: EngineSettings = EngineSettings(),
    verbose: bool = os.environ.get("FEDSILO_VERBOSE") == "1",
) -> None:
    """Run `server_app` against `n_banks` virtual SuperNodes running `client_app`."""
    if str(run_config.get("secagg.mode", "on")) == "on" and not run_config.get(SIMULATED_IDENTITY_KEY):
        suite = str(run_config.get(SUITE_KEY, DEFAULT_SUITE))
        consortium = simulated_consortium(Path(app_dir).parent / "consortium", n_banks, suite=suite)
        run_config = {**run_config, SIMULATED_IDENTITY_KEY: str(consortium)}
    write_app_descriptor(app_dir, run_config, version)
    flwr_logger = flower_logger()
    previous = flwr_logger.level
    if not verbose:
        flwr_logger.setLevel(logging.WARNING)
    try:
        run_app_simulation(server_app, client_app, n_banks, backend_config(settings), Path(app_dir), verbose)
    finally:
        flwr_logger.setLevel(previous)
