"""Split training and scoring on Flower's Simulation Engine: one virtual SuperNode per party, a relaying ServerApp.

The harness hands each simulated institution its own file (its rows, its fresh model,
the label holder's schedule: :func:`fedsilo.peers.vertical.apps.write_party_file`), runs
the relay (:class:`fedsilo.peers.vertical.apps.Relay`) and the parties' ClientApp on the
engine, and reads back what each party wrote when the job finished (its final state,
the label holder's probabilities for its held-out customers), into the party objects
it was given: the run folder, ledgers and audit are then written as for the in-process
engine. Node 0 is the label holder, node k the k-th feature party.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.app import RecordDict

from fedsilo.peers.flower_compat.simulation import prompt_dispatch
from fedsilo.peers.vertical import records
from fedsilo.peers.vertical.apps import (
    PARTIES_DIR_KEY,
    Plan,
    Relay,
    build_client_app,
    read_final_state,
    relay_server_app,
    write_party_file,
)
from fedsilo.peers.vertical.parties import FeatureParty, LabelHolder
from fedsilo.peers.vertical.state import import_state
from fedsilo.peers.vertical.training import EpochStats
from fedsilo.simulations.engine import EngineSettings, run_flower_simulation
from fedsilo.simulations.federation import fedsilo_version

__all__ = ["frames_tap", "train_and_score_on_engine"]

DISPATCH_INTERVAL = 0.002  # seconds between the engine's passes handing out messages (Flower: 0.1)

FrameTap = Callable[[str, str, bytes], None]


def frames_tap(tap: FrameTap) -> Callable[[str, str, RecordDict], None]:
    """A relay tap that shows ``tap`` every relayed message in its byte form (what the in-process engine shows)."""

    def see(direction: str, party: str, content: RecordDict) -> None:
        for slot in records.slots(content):
            tap(direction, party, records.decode(content, slot).to_bytes())

    return see


def train_and_score_on_engine(
    holder: LabelHolder,
    parties: list[FeatureParty],
    epochs: int,
    batch_size: int,
    seed: int,
    work: Path,
    *,
    noise_seeds: list[int | None] | None = None,
    tap: Callable[[str, str, RecordDict], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    engine: EngineSettings = EngineSettings(),
) -> tuple[list[EpochStats], np.ndarray]:
    """Train for ``epochs`` and score the holder's held-out rows on the engine; (per-epoch stats, probabilities).

    ``noise_seeds[i]`` seeds node i's noise (``--reproducible``); None: ``SecureNoise``.
    The given party objects end in the state their nodes finished in.
    """
    directory = Path(work) / "parties"
    everyone = [holder, *parties]
    seeds = noise_seeds or [None] * len(everyone)
    plan = Plan(epochs, batch_size, seed)
    for node, party in enumerate(everyone):
        write_party_file(directory, node, party, plan, seeds[node])
    relay = Relay(len(everyone), tap=tap, on_epoch=on_epoch)
    run_config = {PARTIES_DIR_KEY: str(directory), "secagg.mode": "off"}
    with prompt_dispatch(DISPATCH_INTERVAL):  # two exchanges per batch: Flower's 0.1 s dispatch would dominate
        run_flower_simulation(
            relay_server_app(relay),
            build_client_app(),
            len(everyone),
            run_config,
            Path(work) / "app",
            fedsilo_version(),
            engine,
        )
    if relay.error is not None:
        raise relay.error
    if len(relay.history) != epochs:
        raise RuntimeError(f"the vertical job ended after {len(relay.history)} of {epochs} epochs")
    probabilities = None
    for party in everyone:
        state = read_final_state(directory, party.name)
        if "scores.probabilities" in state:
            probabilities = state.pop("scores.probabilities")
        import_state(party, state)
    return relay.history, probabilities
