"""A Message-API strategy that wraps another one, as Flower's DP wrappers do.

Subclasses override only the stage they change; every other call goes to the wrapped
strategy, so wrappers compose (`Observed(Guarded(FedAvg()))`).
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


class StrategyWrapper(Strategy):
    """Delegates every stage to `inner`."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()


def find_wrapper(strategy: Strategy, kind: type) -> Strategy | None:
    """The first wrapper of type `kind` in the chain `strategy`, `strategy.inner`, ..."""
    current: Strategy | None = strategy
    while current is not None:
        if isinstance(current, kind):
            return current
        current = getattr(current, "inner", None)
    return None
