"""Split training and two-party scoring, transport-agnostic: every message crosses as bytes through ``tap``.

In one process (the simulation, the tests) the parties are objects and a message is
encoded, shown to ``tap(direction, party, frame)`` and decoded by the receiver, exactly
the bytes the network version (issue 19) will carry; the number of bytes sent per
epoch is counted from them.

Batches: the label holder shuffles its training index each epoch and cuts it into
batches of ``batch_size``. The shuffle is seeded: it is not a privacy mechanism (no
amplification by sampling is claimed; every party sees every batch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedsilo.peers.vertical.messages import BatchRequest, Embeddings, Gradients
from fedsilo.peers.vertical.parties import FeatureParty, LabelHolder

__all__ = ["EpochStats", "score", "train"]

Tap = Callable[[str, str, bytes], None]


@dataclass
class EpochStats:
    """One epoch: mean training loss (as the label holder sees it), bytes sent each way, seconds."""

    epoch: int
    loss: float
    bytes_to_holder: int = 0
    bytes_to_parties: int = 0
    seconds: float = 0.0
    epsilon: dict[str, float] = field(default_factory=dict)


def _cross(frame: bytes, direction: str, party: str, tap: Tap | None, stats: EpochStats | None) -> bytes:
    if tap is not None:
        tap(direction, party, frame)
    if stats is not None:
        if direction == "to_holder":
            stats.bytes_to_holder += len(frame)
        else:
            stats.bytes_to_parties += len(frame)
    return frame


def _epsilons(holder: LabelHolder, parties: list[FeatureParty]) -> dict[str, float]:
    return {p.name: p.accountant.spent() for p in [holder, *parties] if p.accountant is not None}


def train(
    holder: LabelHolder,
    parties: list[FeatureParty],
    epochs: int,
    batch_size: int,
    seed: int,
    tap: Tap | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """``epochs`` passes over the label holder's training index; the per-epoch statistics."""
    holder.connect([p.hello() for p in parties])
    rng = np.random.default_rng(seed)
    batch_id, history = 0, []
    for epoch in range(1, epochs + 1):
        stats, losses, started = EpochStats(epoch, 0.0), [], time.perf_counter()
        order = rng.permutation(holder.train_index)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch_id += 1
            received = []
            for k, party in enumerate(parties):
                request = _cross(holder.request(k, index, batch_id).to_bytes(), "to_party", party.name, tap, stats)
                answer = party.embed(BatchRequest.from_bytes(request))
                received.append(Embeddings.from_bytes(_cross(answer.to_bytes(), "to_holder", party.name, tap, stats)))
            loss, gradients = holder.step(batch_id, index, received)
            losses.append(loss * len(index))
            for party, message in zip(parties, gradients):
                party.apply(Gradients.from_bytes(_cross(message.to_bytes(), "to_party", party.name, tap, stats)))
        stats.loss = float(np.sum(losses) / len(order)) if len(order) else float("nan")
        stats.seconds = time.perf_counter() - started
        stats.epsilon = _epsilons(holder, parties)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return history


def score(
    holder: LabelHolder, parties: list[FeatureParty], index: np.ndarray, batch: int = 0, tap: Tap | None = None
) -> np.ndarray:
    """Probabilities for the label holder's ``index`` rows: each feature party releases those rows' embeddings once.

    The scoring step of a deployed model as well: the trained parts stay with their
    owners, the label holder asks each party for the customers' bottom outputs (a
    release charged to that party's accountant when private) and applies its own part.
    """
    index = np.asarray(index, dtype=np.int64)
    received = []
    for k, party in enumerate(parties):
        request = _cross(holder.request(k, index, batch, training=False).to_bytes(), "to_party", party.name, tap, None)
        answer = party.embed(BatchRequest.from_bytes(request))
        received.append(Embeddings.from_bytes(_cross(answer.to_bytes(), "to_holder", party.name, tap, None)))
    return holder.predict(batch, index, received)
