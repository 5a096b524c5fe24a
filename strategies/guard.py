"""Refuses malformed training replies before they reach aggregation.

A reply is refused, with a logged reason naming the node, when its arrays do not have
exactly the names and shapes of the model that was sent, contain NaN or ±inf, or its
`num-examples` weight is missing, non-finite or not positive. Refused replies are
dropped from the round (they never touch the aggregate); the round goes on with the
others. Refusals are kept in `refusals` for reports and tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid

from fedsilo.strategies.wrapper import StrategyWrapper


@dataclass(frozen=True)
class Refusal:
    server_round: int
    node_id: int
    reason: str


def check_train_reply(reply: Message, expected: dict[str, tuple[int, ...]], weight_key: str) -> str | None:
    """The reason to refuse `reply`, or None when it is well-formed."""
    if reply.has_error():
        return None  # an error reply carries no update; the inner strategy counts it as a failure
    content = reply.content
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return "reply must carry exactly one ArrayRecord and one MetricRecord"
    arrays = next(iter(content.array_records.values()))
    names = set(arrays.keys())
    if names != set(expected):
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        return f"update names differ from the model: missing {missing}, unexpected {extra}"
    for name, shape in expected.items():
        value = arrays[name].numpy()
        if tuple(value.shape) != shape:
            return f"update '{name}' has shape {tuple(value.shape)}, the model has {shape}"
        if not np.issubdtype(value.dtype, np.floating):
            return f"update '{name}' has dtype {value.dtype}, expected a float type"
        if not np.isfinite(value).all():
            return f"update '{name}' contains NaN or infinite values"
    metrics = next(iter(content.metric_records.values()))
    weight = metrics.get(weight_key)
    if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        return f"'{weight_key}' must be a positive finite number, got {weight!r}"
    return None


class ReplyGuard(StrategyWrapper):
    """Drops malformed training replies (see module docstring) before `inner` aggregates."""

    def __init__(self, inner, weight_key: str = "num-examples") -> None:
        super().__init__(inner)
        self.weight_key = weight_key
        self.refusals: list[Refusal] = []
        self._expected: dict[str, tuple[int, ...]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._expected = {name: tuple(array.shape) for name, array in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted = []
        for reply in replies:
            reason = check_train_reply(reply, self._expected, self.weight_key)
            if reason is None:
                accepted.append(reply)
                continue
            node = reply.metadata.src_node_id
            self.refusals.append(Refusal(server_round, node, reason))
            log(WARNING, "round %d: refused the update of node %d: %s", server_round, node, reason)
        return super().aggregate_train(server_round, accepted)
