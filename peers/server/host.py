"""The job host: runs one job's rounds over its peers with the job's strategy.

`JobHost.run` is what the ServerApp's main does: build the initial model from the job,
run the strategy for the job's rounds (the strategy waits until every expected peer is
registered before it samples any), and keep the final weights and every peer's
metrics. `server_app(host)` wraps it into a Flower `ServerApp`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from safetensors.numpy import load_file

from fedsilo.errors import ConfigError
from fedsilo.peers.flower_compat.grid import is_simulation_grid
from fedsilo.peers.identity.round_keys import SIMULATED_IDENTITY_KEY, SUITE_KEY, ManifestVerifier, simulated_verifier
from fedsilo.peers.job import JobConfig, global_shapes, host_feature_count, secagg_config
from fedsilo.peers.models import build_model, get_weights, select
from fedsilo.peers.server.polling_grid import PromptGrid
from fedsilo.peers.server.windowed_grid import WindowedGrid
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE
from fedsilo.strategies.factory import build_strategy
from fedsilo.strategies.observer import Observed, RoundCallback

SIMULATION_PULL_INTERVAL = 0.01
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

    def __init__(
        self, job: JobConfig, evaluate_fn: EvaluateFn | None = None, on_round: RoundCallback | None = None
    ) -> None:
        self.job = job
        self.evaluate_fn = evaluate_fn
        self.on_round = on_round
        self.outcome: HostedRun | None = None
        self.min_nodes: int | None = None  # deployed: rounds run with as few peers (the survivors of dropouts)

    def initial_weights(self) -> dict[str, np.ndarray]:
        """The global model's starting point: the shared part, fresh or from `model.base`.

        In a transfer job each peer's encoder (first layer) has its own width and stays
        private, so only the shared part exists at the host.
        """
        job = self.job
        n_features = host_feature_count(job)
        shapes = global_shapes(job, n_features)
        fresh = select(get_weights(build_model(job.model, n_features, seed=job.train.seed)), job.shared)
        if not job.base_model:
            return dict(fresh)
        return load_base_model(job.base_model, shapes)

    def run(self, grid: Grid, context: Context) -> HostedRun:
        if is_simulation_grid(grid):
            # Simulation only: Flower's in-memory grid polls for replies every 0.1 s, which
            # dominates a round's extra exchanges (secure aggregation adds four), and the
            # engine's dispatch costs grow with the messages held at once (see WindowedGrid).
            grid = WindowedGrid(grid, interval=SIMULATION_PULL_INTERVAL)
        elif not isinstance(grid, PromptGrid):
            grid = PromptGrid(grid)  # Deployment: Flower's HttpGrid waits 3 s between pulls
        initial_weights = self.initial_weights()
        n_params = int(sum(v.size for v in initial_weights.values()))
        fraction = self.job.per_round / self.job.peers
        verifier = _simulated_verifier(context)
        suite = verifier.suite if verifier is not None else str(context.run_config.get(SUITE_KEY, DEFAULT_SUITE))
        strategy = build_strategy(
            self.job.strategy,
            self.job.peers,
            fraction_train=fraction,
            fraction_evaluate=fraction,
            on_round=self.on_round,
            secagg=secagg_config(self.job, n_params, suite) if self.job.secagg.enabled else None,
            sum_updates=self.job.dp.mode == "distributed",
            rounds=self.job.train.rounds,
            verifier=verifier,
            min_nodes=self.min_nodes,
        )
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
            grid=grid,
            initial_arrays=initial,
            num_rounds=self.job.train.rounds,
            train_config=ConfigRecord({"job-id": self.job.job_id}),
            evaluate_config=ConfigRecord({"job-id": self.job.job_id}),
            evaluate_fn=evaluate,
        )
        weights = {k: v.numpy() for k, v in result.arrays.items()}
        self.outcome = HostedRun(weights=weights, strategy=strategy, central_metrics=central)
        return self.outcome


def _simulated_verifier(context: Context) -> ManifestVerifier | None:
    """In a simulation, the simulated consortium's identities (the host checks signatures too)."""
    directory = context.run_config.get(SIMULATED_IDENTITY_KEY)
    return simulated_verifier(Path(str(directory))) if directory else None


def load_base_model(path: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The shared weights of a published model file, checked against the job's model."""
    if not Path(path).is_file():
        raise ConfigError(f"base model {path} does not exist: give a .safetensors file from an earlier run")
    try:
        weights = load_file(path)
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise ConfigError(f"cannot read base model {path}: {exc}") from None
    missing = sorted(set(shapes) - set(weights))
    if missing:
        raise ConfigError(f"base model {path} lacks {missing}: it was not trained with this model shape")
    for name, shape in shapes.items():
        if tuple(weights[name].shape) != shape:
            raise ConfigError(
                f"base model {path}: '{name}' has shape {tuple(weights[name].shape)}, the job's model needs {shape}"
            )
    return {name: weights[name].astype(np.float32) for name in shapes}


def server_app(host: JobHost) -> ServerApp:
    """A Flower ServerApp whose main runs `host`."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        host.run(grid, context)

    return app
