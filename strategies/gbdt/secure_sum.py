"""The host relays one SecAgg+ round of histogram vectors and learns only their sum.

This is `fedsilo.privacy.secagg`'s protocol (the same server state machine the Flower
strategy `fedsilo.strategies.secagg.SecureAggregation` drives), played over the five
stages with peers that the host reaches by method calls instead of Flower messages:
advertise keys, share keys, masked input (the bank computes its histogram and masks
it, with its share of the distributed noise when the configuration has one), the
consistency check and unmask. Every peer's vector is encoded with weight 1
(``max_weight = 1``), so the host recovers ``sum_i x_i = average * total_weight``.

A peer that raises (its own refusal of a malformed histogram, a protocol error) or
that the server refuses (`PeerRejected`: wrong length, values outside Z_M, a bad
signature) is dropped from the round with its reason recorded under its name; the
round goes on while the survivors reach the threshold, and is otherwise aborted
before anything is unmasked (`ThresholdNotMet`: no sum, nothing released).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.privacy.secagg import (
    AdvertiseKeys,
    ConsistencyRequest,
    EncryptedShares,
    MaskedInput,
    PeerRejected,
    SecAggConfig,
    SecAggServer,
    SurvivorSignature,
    ThresholdNotMet,
    UnmaskShares,
    Verifier,
)
from fedsilo.privacy.secagg.messages import MaskInputRequest, RoundSetup, ShareKeysRequest, UnmaskRequest

Request = TypeVar("Request")
Answer = TypeVar("Answer")


class HistogramPeer(Protocol):
    """A bank as the host reaches it: its name, node id and the five protocol answers."""

    name: str
    node_id: int

    def advertise(self, setup: RoundSetup) -> AdvertiseKeys: ...

    def share(self, request: ShareKeysRequest) -> dict[int, EncryptedShares]: ...

    def mask(self, request: MaskInputRequest) -> MaskedInput: ...

    def sign(self, request: ConsistencyRequest) -> SurvivorSignature: ...

    def unmask(self, request: UnmaskRequest) -> UnmaskShares: ...


@dataclass
class SumOutcome:
    """The released sum (None when the round aborted) and what happened to each bank, by name."""

    sums: np.ndarray | None
    survivors: tuple[str, ...] = ()
    dropped: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    aborted: str | None = None


def secure_sum(
    config: SecAggConfig,
    round_id: int,
    peers: Sequence[HistogramPeer],
    dim: int,
    verifier: Verifier | None = None,
) -> SumOutcome:
    """One SecAgg+ round over ``peers``' ``dim``-vectors (see the module docstring)."""
    if config.max_weight != 1.0:
        raise ConfigError("secure histogram sums encode every bank with weight 1: use max_weight = 1")
    by_id = {p.node_id: p for p in peers}
    names = {p.node_id: p.name for p in peers}
    server = SecAggServer(config, round_id, by_id, dim, round_seed=os.urandom(32), verifier=verifier)
    out = SumOutcome(None)
    silent: set[int] = set()

    def ask(
        node: int, call: Callable[[Request], Answer], request: Request, deliver: Callable[[int, Answer], None]
    ) -> None:
        """``deliver(node, call(request))`` unless the node is silent; a refusal silences it."""
        if node in silent:
            return
        try:
            message = call(request)
        except FedsiloError as error:  # the bank refused to answer (its own check) or failed
            out.refused[names[node]] = str(error)
            silent.add(node)
            return
        try:
            deliver(node, message)
        except PeerRejected as rejected:
            out.refused[names[node]] = rejected.reason
            silent.add(node)

    try:
        for u in by_id:
            ask(u, by_id[u].advertise, server.setup, server.receive_advertise)
        for u, share_request in server.end_advertise().items():
            ask(u, by_id[u].share, share_request, server.receive_shares)
        for u, mask_request in server.end_share_keys().items():
            ask(u, by_id[u].mask, mask_request, server.receive_masked_input)
        for u, check_request in server.end_mask_input().items():
            ask(u, by_id[u].sign, check_request, server.receive_consistency)
        for u, unmask_request in server.end_consistency().items():
            ask(u, by_id[u].unmask, unmask_request, server.receive_unmask)
        result = server.aggregate()
    except ThresholdNotMet as aborted:
        out.aborted = str(aborted)
        out.dropped = {names[u]: why for u, why in server.dropouts.items()}
        return out
    out.sums = result.average * result.total_weight
    out.survivors = tuple(names[u] for u in result.survivors)
    out.dropped = {names[u]: why for u, why in server.dropouts.items()}
    for u, why in result.rejections.items():
        out.refused.setdefault(names[u], why)
    return out
