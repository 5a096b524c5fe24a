"""The job host: runs one job's rounds over its peers with the job's strategy.

`JobHost.run` is what the ServerApp's main does: build the initial model from the job,
run the strategy for the job's rounds (the strategy waits until every expected peer is
registered before it samples any), and keep the final weights and every peer's
metrics. `server_app(host)` wraps it into a Flower `ServerApp`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from peers.data.encoding import TabularEncoder
from peers.job import JobConfig, secagg_config
from peers.models import build_model, get_weights
from strategies.factory import build_strategy
from strategies.observer import Observed, RoundCallback

EvaluateFn = Callable[[int, dict[str, np.ndarray]], dict[str, float] | None]


@dataclass
class HostedRun:
    """The outcome of a job: final weights and the per-round, per-peer metrics."""

    weights: dict[str, np.ndarray]
    strategy: Observed
    central_metrics: dict[int, dict[str, float]]


class JobHost:
    """Hosts one job; the strategy waits for `job.peers` peers before each round.

    `evaluate_fn`, when given, scores the global weights after every round on data the
    host holds. In a deployment the host holds none; the simulation harness passes one
    that scores on every bank's held-out rows, as a yardstick for its report.
    """

    def __init__(self, job: JobConfig, evaluate_fn: EvaluateFn | None = None, on_round: RoundCallback | None = None) -> None:
        self.job = job
        self.evaluate_fn = evaluate_fn
        self.on_round = on_round
        self.outcome: HostedRun | None = None

    def initial_weights(self) -> dict[str, np.ndarray]:
        encoder = TabularEncoder.from_json(Path(self.job.encoder_path).read_text())
        return get_weights(build_model(self.job.model, encoder.n_features, seed=self.job.train.seed))

    def run(self, grid: Grid, context: Context) -> HostedRun:
        initial_weights = self.initial_weights()
        n_params = int(sum(v.size for v in initial_weights.values()))
        strategy = build_strategy(
            self.job.strategy, self.job.peers, on_round=self.on_round,
            secagg=secagg_config(self.job, n_params) if self.job.secagg.enabled else None,
            sum_updates=self.job.dp.mode == "distributed")
        central: dict[int, dict[str, float]] = {}

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if self.evaluate_fn is None:
                return None
            scores = self.evaluate_fn(server_round, {k: v.numpy() for k, v in arrays.items()})
            if scores is None:
                return None
            central[server_round] = scores
            return MetricRecord(scores)

        initial = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in initial_weights.items()})
        result = strategy.start(
            grid=grid, initial_arrays=initial, num_rounds=self.job.train.rounds,
            train_config=ConfigRecord({"job-id": self.job.job_id}),
            evaluate_config=ConfigRecord({"job-id": self.job.job_id}),
            evaluate_fn=evaluate,
        )
        weights = {k: v.numpy() for k, v in result.arrays.items()}
        self.outcome = HostedRun(weights=weights, strategy=strategy, central_metrics=central)
        return self.outcome


def server_app(host: JobHost) -> ServerApp:
    """A Flower ServerApp whose main runs `host`."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        host.run(grid, context)

    return app

