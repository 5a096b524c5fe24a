"""Builds the aggregation strategy a job names, wrapped with fedsilo's guards.

Supported: `fedavg` (Flower's FedAvg) and `fedadam` (Flower's FedAdam: server-side
Adam on the averaged update; it only post-processes the average, so it composes with
local DP and with secure aggregation, which both deliver that average). Every strategy waits until `n_peers` peers are registered before
it samples any (`min_available_nodes`), so no round starts with the early arrivals
only.
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import FedAdam, FedAvg, Strategy

from fedsilo.errors import ConfigError
from fedsilo.privacy.secagg import SecAggConfig, Verifier
from fedsilo.strategies.guard import ReplyGuard
from fedsilo.strategies.observer import Observed, RoundCallback
from fedsilo.strategies.secagg import SecureAggregation

STRATEGIES = ("fedavg", "fedadam")


def build_strategy(
    name: str,
    n_peers: int,
    fraction_train: float = 1.0,
    fraction_evaluate: float = 1.0,
    on_round: RoundCallback | None = None,
    secagg: SecAggConfig | None = None,
    sum_updates: bool = False,
    rounds: int | None = None,
    verifier: Verifier | None = None,
    min_nodes: int | None = None,
) -> Observed:
    """`name` aggregation over `n_peers` peers, guarded, observed and, when `secagg`
    is given, run through SecAgg+ secure aggregation (`sum_updates`: the global model
    moves by the sum of the peers' updates instead of their weighted mean, as
    distributed DP needs; `rounds`, the job's number of rounds, lets each round's
    evaluation carry the next round's key advertisement, see `SecureAggregation`;
    `verifier`: the consortium's identities, for the host to check the peers' signatures too;
    `min_nodes`: sample rounds from as few available peers, down from `n_peers`, so that a
    round runs with the survivors of dropouts instead of waiting for the lost)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}': use one of {', '.join(STRATEGIES)}")
    if n_peers < 1:
        raise ConfigError("a job needs at least one peer")
    floor = n_peers if min_nodes is None else max(1, min(min_nodes, n_peers))
    common: dict[str, Any] = dict(
        fraction_train=fraction_train,
        fraction_evaluate=fraction_evaluate,
        min_train_nodes=min(floor, max(1, round(fraction_train * n_peers))),
        min_evaluate_nodes=min(floor, max(1, round(fraction_evaluate * n_peers))) if fraction_evaluate > 0 else 0,
        min_available_nodes=floor,
    )
    inner: Strategy
    if name == "fedavg":
        inner = FedAvg(**common)
    else:
        inner = FedAdam(**common, eta=0.05, eta_l=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)
    guarded: Strategy = ReplyGuard(inner)
    if secagg is not None:
        guarded = SecureAggregation(guarded, secagg, sum_updates=sum_updates, rounds=rounds, verifier=verifier)
    return Observed(guarded, on_round=on_round)
