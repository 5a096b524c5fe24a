"""`SecureAggregation`: runs SecAgg+ inside any Message-API strategy's training round.

Each training round becomes four exchanges with the sampled peers, all as Flower
`train` messages (see `wire`):

1. advertise: each peer sends fresh X25519 public keys;
2. share: each peer sends its neighbours Shamir shares of its secrets, AES-GCM
   encrypted under pairwise keys (the host only relays ciphertexts);
3. mask: the usual training request; the peer's `secagg_mod` trains, then uploads
   its update masked (`privacy.secagg`), with its weight inside the masked vector;
4. unmask: survivors send shares that remove the masks of the sum, never of one peer.

Stages 1–2 run in `configure_train` (which is given the grid), stage 4 in
`aggregate_train`. The host learns only Σ wᵢ·Δᵢ and Σ wᵢ over the peers that
survived stage 3, where Δᵢ is peer i's update (trained weights − global weights),
clipped to ±`clip` per coordinate. (With `sum_updates`, used by distributed DP where
every weight is 1, the global model moves by Σ Δᵢ instead of the mean.) From them it forms one reply carrying the weighted
average update added to the global weights and hands it to the wrapped strategy, so
any strategy that only post-processes the weighted average composes unchanged:
FedAvg (exactly), FedAdam/FedYogi/FedAdagrad (server optimisers on that average).
Strategies that need each update (Krum, median, trimmed mean, Bulyan) cannot compose
with secure aggregation by design.

Dropouts: a peer that fails to answer a stage is dropped; while at least the graph's
threshold of peers survive, the result equals the plaintext weighted average of the
survivors up to the stated quantization bound. Below the threshold the round is
aborted before anything is unmasked, the global model is left as it was, and the next
round starts; `ThresholdNotMet` is recorded in `aborted_rounds`.

Malformed or out-of-order messages (wrong round or stage, a replay, a masked vector of
the wrong length or dtype, shares that fail authentication, an unsolicited answer) are
refused by `privacy.secagg` with a reason naming the peer, logged here, and the peer is
dropped; the round continues while the threshold allows.

Assumptions (see `privacy.secagg`): the host is honest-but-curious and colludes with at
most `collusion_fraction` of the peers; without identity keys (simulation) the host is
trusted to relay public keys unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from logging import WARNING
from typing import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from privacy.errors import ProtocolError
from privacy.secagg import (
    AdvertiseKeys,
    MaskedInput,
    PeerRejected,
    SecAggConfig,
    SecAggServer,
    ThresholdNotMet,
    UnmaskShares,
)
from privacy.secagg.messages import encrypted_shares_from_dict
from strategies.secagg.wire import (
    SECAGG_CONFIG_KEY,
    flatten,
    read_masked_array,
    read_stage,
    stage_record,
    unflatten,
)
from strategies.wrapper import StrategyWrapper

STAGE_TIMEOUT = 600.0


@dataclass
class _Round:
    server: SecAggServer
    template: ArrayRecord
    node_ids: list[int]
    grid: Grid
    sent: dict[int, Message] = field(default_factory=dict)


class SecureAggregation(StrategyWrapper):
    """Wraps `inner` so that its training rounds aggregate through SecAgg+."""

    def __init__(self, inner, config: SecAggConfig, stage_timeout: float = STAGE_TIMEOUT,
                 round_seed: Callable[[int], bytes] | None = None, sum_updates: bool = False) -> None:
        super().__init__(inner)
        self.config = config
        self.sum_updates = sum_updates
        self.stage_timeout = stage_timeout
        self._round_seed = round_seed or (lambda _round: os.urandom(32))
        self._round: _Round | None = None
        self.aborted_rounds: dict[int, str] = {}
        self.refusals: dict[int, dict[int, str]] = {}
        self.dropouts: dict[int, dict[int, str]] = {}

    # ----------------------------------------------------------------- helpers
    def _exchange(self, grid: Grid, stage: str, server_round: int,
                  payloads: dict[int, dict]) -> dict[int, Message]:
        """Send one stage's payload to each node; return the non-error replies by node."""
        messages = [Message(RecordDict({SECAGG_CONFIG_KEY: stage_record(stage, server_round, payload)}),
                            dst_node_id=node, message_type="train") for node, payload in payloads.items()]
        replies = grid.send_and_receive(messages, timeout=self.stage_timeout)
        return self._collect(stage, server_round, replies)

    def _collect(self, stage: str, server_round: int, replies: Iterable[Message]) -> dict[int, Message]:
        out: dict[int, Message] = {}
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.dropouts.setdefault(server_round, {})[node] = f"{stage}: {reply.error.reason}"
                log(WARNING, "round %d, %s: node %d dropped (%s)", server_round, stage, node, reply.error.reason)
                continue
            if node in out:
                self._refuse(server_round, node, f"duplicate {stage} reply")
                continue
            out[node] = reply
        return out

    def _refuse(self, server_round: int, node: int, reason: str) -> None:
        self.refusals.setdefault(server_round, {})[node] = reason
        log(WARNING, "round %d: refused node %d: %s", server_round, node, reason)

    def _payload(self, server_round: int, node: int, reply: Message, stage: str) -> dict | None:
        try:
            got_stage, got_round, payload = read_stage(reply.content)
        except ProtocolError as error:
            self._refuse(server_round, node, str(error))
            return None
        if got_stage != stage or got_round != server_round:
            self._refuse(server_round, node, f"answered stage {got_stage} of round {got_round}, "
                                             f"expected {stage} of round {server_round}")
            return None
        return payload

    def _abort(self, server_round: int, error: ProtocolError) -> None:
        self.aborted_rounds[server_round] = str(error)
        self._round = None
        log(WARNING, "round %d: secure aggregation aborted, nothing unmasked: %s", server_round, error)

    # ----------------------------------------------------------------- stages 1-2
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        planned = list(super().configure_train(server_round, arrays, config, grid))
        if not planned:
            return []
        template = planned[0].content
        node_ids = [m.metadata.dst_node_id for m in planned]
        dim = int(sum(a.numpy().size for a in arrays.values()))
        server = SecAggServer(self.config, server_round, node_ids, dim, round_seed=self._round_seed(server_round))
        self._round = _Round(server, arrays, node_ids, grid)
        try:
            replies = self._exchange(grid, "advertise", server_round,
                                     {n: server.setup.to_dict() for n in node_ids})
            for node, reply in replies.items():
                payload = self._payload(server_round, node, reply, "advertise")
                if payload is not None:
                    self._receive(server.receive_advertise, server_round, node, AdvertiseKeys.from_dict, payload)
            requests = server.end_advertise()
            replies = self._exchange(grid, "share", server_round, {n: r.to_dict() for n, r in requests.items()})
            for node, reply in replies.items():
                payload = self._payload(server_round, node, reply, "share")
                if payload is not None:
                    self._receive(server.receive_shares, server_round, node, encrypted_shares_from_dict, payload)
            requests = server.end_share_keys()
        except ThresholdNotMet as error:
            self._abort(server_round, error)
            return []
        out = []
        for node, request in requests.items():
            content = RecordDict({**dict(template.items()),
                                  SECAGG_CONFIG_KEY: stage_record("mask", server_round, request.to_dict())})
            out.append(Message(content, dst_node_id=node, message_type="train"))
        return out

    def _receive(self, receive, server_round: int, node: int, decode, payload: dict) -> None:
        try:
            receive(node, decode(payload))
        except PeerRejected as error:
            self._refuse(server_round, node, str(error))
        except ProtocolError as error:  # malformed payload: the decoder refused it
            self._refuse(server_round, node, str(error))

    # ----------------------------------------------------------------- stages 3-4
    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        state, self._round = self._round, None
        replies = list(replies)
        if state is None or state.server.round_id != server_round:
            return super().aggregate_train(server_round, [])
        server = state.server
        try:
            for node, reply in self._collect("mask", server_round, replies).items():
                payload = self._payload(server_round, node, reply, "mask")
                if payload is None:
                    continue
                try:
                    masked = MaskedInput.from_dict({**payload, "masked": read_masked_array(reply.content)})
                except ProtocolError as error:
                    self._refuse(server_round, node, str(error))
                    continue
                self._receive(server.receive_masked_input, server_round, node, lambda m: m, masked)
            requests = server.end_mask_input()
            replies_unmask = self._exchange(state.grid, "unmask", server_round,
                                            {n: r.to_dict() for n, r in requests.items()})
            for node, reply in replies_unmask.items():
                payload = self._payload(server_round, node, reply, "unmask")
                if payload is not None:
                    self._receive(server.receive_unmask, server_round, node, UnmaskShares.from_dict, payload)
            result = server.aggregate()
        except ThresholdNotMet as error:
            self._abort(server_round, error)
            return super().aggregate_train(server_round, [])
        update = result.average * result.total_weight if self.sum_updates else result.average
        new_weights = unflatten(flatten(state.template) + update, state.template)
        metrics = MetricRecord({"num-examples": float(result.total_weight),
                                "secagg-survivors": len(result.survivors),
                                "secagg-dropped": len(result.dropped),
                                "secagg-error-bound": float(result.error_bound)})
        aggregate = Message(RecordDict({"arrays": new_weights, "metrics": metrics}),
                            dst_node_id=0, message_type="train")
        aggregate.metadata.__dict__["_src_node_id"] = 0
        return super().aggregate_train(server_round, [aggregate])
