"""`SecureAggregation`: runs SecAgg+ inside any Message-API strategy's training round.

Each training round becomes five exchanges with the sampled peers, all as Flower
`train` messages (see `wire`):

1. advertise: each peer sends fresh agreement public keys of the consortium's crypto
   suite (X25519; SM2-curve points under gm, `SecAggConfig.suite`), signed with its consortium
   identity (the peers verify each other's signatures: the host cannot swap a key);
2. share: each peer sends its neighbours Shamir shares of its secrets, AEAD-encrypted
   (AES-GCM; SM4-GCM under gm) under pairwise keys (the host only relays ciphertexts);
3. mask: the usual training request; the peer's `secagg_mod` trains, then uploads
   its update masked (`fedsilo.privacy.secagg`), with its weight inside the masked vector;
4. check: survivors sign the survivor and dropout lists (the consistency check);
5. unmask: survivors holding enough signatures on the lists they signed send shares
   that remove the masks of the sum, never of one peer.

Stages 1–2 run in `configure_train` (which is given the grid), stages 4–5 in
`aggregate_train`.

Stage 1 of round r+1 rides on round r's evaluation when the wrapper knows the job's
`rounds`: `configure_evaluate(r)` adds the next round's `advertise` record to every
evaluation message (the participants are the evaluated peers), the peer's
`secagg_mod` evaluates the model as it would anyway and adds its fresh keys to the
reply, and `aggregate_evaluate(r)` keeps those keys and hands the inner strategy the
replies without them. `configure_train(r+1)` uses them, and skips its own `advertise`
exchange, only if the peers it samples are exactly the peers that advertised;
otherwise it runs stage 1 as above, under a new protocol round id (peers refuse to
advertise twice for one id), and every later round's id is its server round plus the
number of such restarts. Nothing of the protocol changes (the same setup,
fresh keys per round, the same server checks); a round costs one exchange less. A
peer whose evaluation fails (an error reply) has advertised no keys, so it is dropped
from round r+1 as a peer that did not answer `advertise` is.

The host learns only Σ wᵢ·Δᵢ and Σ wᵢ over the peers that survived stage 3, where
Δᵢ is peer i's update (trained weights − global weights), clipped to ±`clip` per
coordinate. (With `sum_updates`, used by distributed DP where
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
refused by `fedsilo.privacy.secagg` with a reason naming the peer, logged here, and the peer is
dropped; the round continues while the threshold allows.

Assumptions (see `fedsilo.privacy.secagg`): the host colludes with at most
`collusion_fraction` of the peers; it may deviate from the protocol (swap keys, tell
peers different dropout stories), which the peers detect, but it can always abort a
round. With a `verifier` (the consortium's identities) the host also checks the
signatures itself and drops a badly signing peer before its neighbours abort.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from fedsilo.errors import ProtocolError
from fedsilo.privacy.secagg import (
    AdvertiseKeys,
    MaskedInput,
    PeerRejected,
    SecAggConfig,
    SecAggServer,
    SurvivorSignature,
    ThresholdNotMet,
    UnmaskShares,
    Verifier,
)
from fedsilo.privacy.secagg.messages import encrypted_shares_from_dict
from fedsilo.strategies.secagg.wire import (
    SECAGG_CONFIG_KEY,
    flatten,
    read_masked_array,
    read_stage,
    stage_record,
    unflatten,
)
from fedsilo.strategies.wrapper import StrategyWrapper

STAGE_TIMEOUT = 600.0


@dataclass
class _Advertised:
    """Round r+1's stage 1, carried by round r's evaluation: its server and the peers' replies."""

    server_round: int
    server: SecAggServer
    nodes: frozenset[int]
    dim: int
    replies: list[Message] = field(default_factory=list)


@dataclass
class _Round:
    server_round: int
    server: SecAggServer
    template: ArrayRecord
    node_ids: list[int]
    grid: Grid
    sent: dict[int, Message] = field(default_factory=dict)


def _dimension(arrays: ArrayRecord) -> int:
    return int(sum(a.numpy().size for a in arrays.values()))


def _without_stage(reply: Message) -> Message:
    """An evaluation reply as the inner strategy knows it: without the secure-aggregation record it carried."""
    if reply.has_error() or SECAGG_CONFIG_KEY not in reply.content.config_records:
        return reply
    content = RecordDict({k: v for k, v in reply.content.items() if k != SECAGG_CONFIG_KEY})
    # Flower's untyped internal form (its overloads build new messages only): the reply, same metadata.
    return Message(metadata=reply.metadata, content=content)  # type: ignore[call-overload]


class SecureAggregation(StrategyWrapper):
    """Wraps `inner` so that its training rounds aggregate through SecAgg+."""

    def __init__(
        self,
        inner,
        config: SecAggConfig,
        stage_timeout: float = STAGE_TIMEOUT,
        round_seed: Callable[[int], bytes] | None = None,
        sum_updates: bool = False,
        rounds: int | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        super().__init__(inner)
        self.config = config
        self.verifier = verifier
        self.rounds = rounds  # the job's last round; None: never carry stage 1 on an evaluation
        self._advertised: _Advertised | None = None
        self._last_round_id = 0  # the last SecAgg+ protocol round id a setup used
        self.sum_updates = sum_updates
        self.stage_timeout = stage_timeout
        self._round_seed = round_seed or (lambda _round: os.urandom(32))
        self._round: _Round | None = None
        self.aborted_rounds: dict[int, str] = {}
        self.refusals: dict[int, dict[int, str]] = {}
        self.dropouts: dict[int, dict[int, str]] = {}

    # ----------------------------------------------------------------- helpers
    def _new_server(self, server_round: int, node_ids: list[int], dim: int) -> SecAggServer:
        """A SecAgg+ server for `server_round`, under a protocol round id never used before.

        The id is the server round unless an earlier setup took it: a setup carried by
        an evaluation that the round then could not use (see the module docstring).
        Peers refuse to advertise keys for a round id they already advertised for.
        """
        round_id = max(server_round, self._last_round_id + 1)
        self._last_round_id = round_id
        return SecAggServer(
            self.config, round_id, node_ids, dim, round_seed=self._round_seed(server_round), verifier=self.verifier
        )

    def _exchange(self, grid: Grid, stage: str, server_round: int, payloads: dict[int, dict]) -> dict[int, Message]:
        """Send one stage's payload to each node; return the non-error replies by node."""
        messages = [
            Message(
                RecordDict({SECAGG_CONFIG_KEY: stage_record(stage, server_round, payload)}),
                dst_node_id=node,
                message_type="train",
            )
            for node, payload in payloads.items()
        ]
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
            self._refuse(
                server_round,
                node,
                f"answered stage {got_stage} of round {got_round}, expected {stage} of round {server_round}",
            )
            return None
        return payload

    def _abort(self, server_round: int, error: ProtocolError) -> None:
        self.aborted_rounds[server_round] = str(error)
        self._round = None
        log(WARNING, "round %d: secure aggregation aborted, nothing unmasked: %s", server_round, error)

    # ----------------------------------------------------------------- stages 1-2
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        planned = list(super().configure_train(server_round, arrays, config, grid))
        if not planned:
            return []
        template = planned[0].content
        node_ids = [m.metadata.dst_node_id for m in planned]
        dim = _dimension(arrays)
        advertised, self._advertised = self._advertised, None
        carried = (
            advertised
            if advertised is not None
            and advertised.server_round == server_round
            and advertised.nodes == frozenset(node_ids)
            and advertised.dim == dim
            else None
        )
        server = carried.server if carried else self._new_server(server_round, node_ids, dim)
        self._round = _Round(server_round, server, arrays, node_ids, grid)
        try:
            if carried:  # stage 1 rode on the last evaluation
                replies = self._collect("advertise", server_round, carried.replies)
            else:
                replies = self._exchange(grid, "advertise", server_round, {n: server.setup.to_dict() for n in node_ids})
            for node, reply in replies.items():
                payload = self._payload(server_round, node, reply, "advertise")
                if payload is not None:
                    self._receive(server.receive_advertise, server_round, node, AdvertiseKeys.from_dict, payload)
            share_requests = server.end_advertise()
            replies = self._exchange(grid, "share", server_round, {n: r.to_dict() for n, r in share_requests.items()})
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
            content = RecordDict(
                {**dict(template.items()), SECAGG_CONFIG_KEY: stage_record("mask", server_round, request.to_dict())}
            )
            out.append(Message(content, dst_node_id=node, message_type="train"))
        return out

    # ----------------------------------------------------------------- stage 1 of the next round
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        planned = list(super().configure_evaluate(server_round, arrays, config, grid))
        self._advertised = None
        if not planned or self.rounds is None or server_round >= self.rounds:
            return planned
        next_round = server_round + 1
        nodes = [m.metadata.dst_node_id for m in planned]
        server = self._new_server(next_round, nodes, _dimension(arrays))
        record = stage_record("advertise", next_round, server.setup.to_dict())
        for message in planned:
            message.content = RecordDict({**dict(message.content.items()), SECAGG_CONFIG_KEY: record})
        self._advertised = _Advertised(next_round, server, frozenset(nodes), server.dim)
        return planned

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        advertised = self._advertised
        if advertised is not None and advertised.server_round == server_round + 1:
            advertised.replies, replies = replies, [_without_stage(r) for r in replies]
        return super().aggregate_evaluate(server_round, replies)

    def _receive(
        self,
        receive: Callable[[int, Any], object],
        server_round: int,
        node: int,
        decode: Callable[[Any], Any],
        payload: Any,
    ) -> None:
        try:
            receive(node, decode(payload))
        except PeerRejected as error:
            self._refuse(server_round, node, str(error))
        except ProtocolError as error:  # malformed payload: the decoder refused it
            self._refuse(server_round, node, str(error))

    # ----------------------------------------------------------------- stages 3-4
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        state, self._round = self._round, None
        replies = list(replies)
        if state is None or state.server_round != server_round:
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
            checks = server.end_mask_input()
            for node, reply in self._exchange(
                state.grid, "check", server_round, {n: r.to_dict() for n, r in checks.items()}
            ).items():
                payload = self._payload(server_round, node, reply, "check")
                if payload is not None:
                    self._receive(server.receive_consistency, server_round, node, SurvivorSignature.from_dict, payload)
            requests = server.end_consistency()
            replies_unmask = self._exchange(
                state.grid, "unmask", server_round, {n: r.to_dict() for n, r in requests.items()}
            )
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
        metrics = MetricRecord(
            {
                "num-examples": float(result.total_weight),
                "secagg-survivors": len(result.survivors),
                "secagg-dropped": len(result.dropped),
                "secagg-error-bound": float(result.error_bound),
            }
        )
        # The aggregate comes from no one peer: node 0, named through Flower's public API as the source of a
        # reply to a message sent to node 0 (a message's source node has no setter).
        to_none = Message(RecordDict(), dst_node_id=0, message_type="train")
        aggregate = Message(RecordDict({"arrays": new_weights, "metrics": metrics}), reply_to=to_none)
        return super().aggregate_train(server_round, [aggregate])
