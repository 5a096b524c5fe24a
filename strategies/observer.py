"""Records every peer's own metrics per round, for reports and the privacy ledger.

Flower's strategies reduce replies to one weighted average; a report needs each
peer's ε and each peer's AUC. `Observed` keeps, per round, the metric record of every
successful reply and the reason of every error reply, then lets `inner` aggregate.
An optional `on_round` callback sees each finished stage (used for progress displays).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, Message, MetricRecord

from fedsilo.strategies.wrapper import StrategyWrapper

RoundCallback = Callable[[str, int, list[dict], list[str]], None]


def _split(replies: Iterable[Message]) -> tuple[list[Message], list[dict], list[str]]:
    replies = list(replies)
    metrics, errors = [], []
    for reply in replies:
        if reply.has_error():
            errors.append(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
        else:
            for record in reply.content.metric_records.values():
                metrics.append(dict(record))
    return replies, metrics, errors


class Observed(StrategyWrapper):
    """Keeps `train[round]`, `evaluate[round]` (lists of per-peer metric dicts) and `errors`."""

    def __init__(self, inner, on_round: RoundCallback | None = None) -> None:
        super().__init__(inner)
        self.train: dict[int, list[dict]] = defaultdict(list)
        self.evaluate: dict[int, list[dict]] = defaultdict(list)
        self.errors: dict[int, list[str]] = defaultdict(list)
        self.on_round = on_round

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies, metrics, errors = _split(replies)
        self.train[server_round].extend(metrics)
        self.errors[server_round].extend(errors)
        result = super().aggregate_train(server_round, replies)
        if self.on_round:
            self.on_round("train", server_round, metrics, errors)
        return result

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies, metrics, errors = _split(replies)
        self.evaluate[server_round].extend(metrics)
        self.errors[server_round].extend(errors)
        result = super().aggregate_evaluate(server_round, replies)
        if self.on_round:
            self.on_round("evaluate", server_round, metrics, errors)
        return result
