"""Vertical split training: Flower's Simulation Engine against the in-process engine, per epoch, in one run.

The same parties (the vertical scenario's broker and bank, built once by
`fedsilo.simulations.vertical.build_parties`, copied for each engine) train for
``--epochs`` with the same batches, once as objects of this process
(`fedsilo.peers.vertical.training`) and once on Flower's Simulation Engine (a private
Ray runtime, one virtual SuperNode per party, the relaying ServerApp:
`fedsilo.simulations.vertical_engine`). Printed: seconds per epoch of each (the engine's
measured by the relay from the holder's first request of the epoch to the parties'
last update), their ratio, the engine's whole wall time (Ray start and actors
included), and the bytes per epoch each way (identical by construction).

    python bench/vertical_engine.py [--data PATH/UCI_Credit_Card.csv] [--epochs 2] [--no-dp] [--customers N]

Timings on a shared machine are provisional: read the ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np

from fedsilo.peers.client.local_training import limit_threads
from fedsilo.peers.vertical.training import score, train
from fedsilo.privacy.noise_source import SecureNoise
from fedsilo.simulations.config import SimulationConfig
from fedsilo.simulations.vertical import DEFAULT_OVERLAP, build_parties, plan_parties, pooled_table, split_spec
from fedsilo.simulations.vertical_engine import train_and_score_on_engine


def _copy(party):
    """A copy of a party (its noise source is a live cipher stream: the copy gets its own)."""
    noise, party.noise = party.noise, None
    try:
        copied = copy.deepcopy(party)
    finally:
        party.noise = noise
    copied.noise = SecureNoise() if noise is not None else None
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="the UCI credit-card file (default: the synthetic generator)")
    parser.add_argument("--customers", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--no-dp", action="store_true")
    args = parser.parse_args()
    limit_threads()  # as `fedsilo simulate --setup vertical` does (and each Ray worker)
    config = SimulationConfig(
        setup="vertical",
        scenario="uci" if args.data else None,
        data=args.data,
        customers=args.customers,
        rounds=args.epochs,
        batch_size=args.batch_size,
        dp_mode="off" if args.no_dp else "local",
        epsilon=3.0,
    )
    spec = split_spec(config)
    _, holder_dp, party_dp = plan_parties(config, spec)
    parties = build_parties(pooled_table(config), config, spec, holder_dp, party_dp, DEFAULT_OVERLAP)
    rows = len(parties.holder.train_index)
    print(
        f"{rows:,} training customers, batch {args.batch_size}, {args.epochs} epochs, DP {'off' if args.no_dp else 'on'}"
    )

    holder, party = _copy(parties.holder), _copy(parties.party)
    started = time.perf_counter()
    local = train(holder, [party], args.epochs, args.batch_size, config.seed)
    score(holder, [party], holder.test_index)
    local_wall = time.perf_counter() - started

    holder, party = _copy(parties.holder), _copy(parties.party)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        flower, _ = train_and_score_on_engine(holder, [party], args.epochs, args.batch_size, config.seed, Path(work))
    flower_wall = time.perf_counter() - started

    per_local = np.array([s.seconds for s in local])
    per_flower = np.array([s.seconds for s in flower])
    print("epoch  in-process s  flower s  ratio  bytes to holder  bytes to parties")
    for a, b in zip(local, flower):
        print(
            f"{a.epoch:>5}  {a.seconds:>12.2f}  {b.seconds:>8.2f}  {b.seconds / a.seconds:>5.2f}  "
            f"{b.bytes_to_holder:>15,}  {b.bytes_to_parties:>16,}"
        )
        assert (a.bytes_to_holder, a.bytes_to_parties) == (b.bytes_to_holder, b.bytes_to_parties)
    print(
        f"mean per epoch: in-process {per_local.mean():.2f} s, flower {per_flower.mean():.2f} s, "
        f"ratio {per_flower.mean() / per_local.mean():.2f}; whole run (training + scoring): in-process "
        f"{local_wall:.1f} s, flower {flower_wall:.1f} s (Ray start and actors included)"
    )


if __name__ == "__main__":
    main()
