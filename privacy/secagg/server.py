"""The server side of SecAgg+ as a state machine: no network, one round per instance.

Usage (the caller moves messages; ``sender`` is the transport-authenticated node id)::

    server = SecAggServer(config, round_id, participants, dim)
    setup = server.setup                                   # -> every client.advertise_keys
    server.receive_advertise(sender, AdvertiseKeys)        # ... for each answer
    requests = server.end_advertise()                      # {node: ShareKeysRequest}
    server.receive_shares(sender, {dst: EncryptedShares})
    requests = server.end_share_keys()                     # {node: MaskInputRequest}
    server.receive_masked_input(sender, MaskedInput)
    requests = server.end_mask_input()                     # {node: ConsistencyRequest}
    server.receive_consistency(sender, SurvivorSignature)
    requests = server.end_consistency()                    # {node: UnmaskRequest}
    server.receive_unmask(sender, UnmaskShares)
    result = server.aggregate()                            # SecAggResult

``end_*`` closes a stage: peers that did not answer are dropouts. Every ``receive_*``
validates the message (round, stage, sender, duplicates, types, lengths, dtype, range)
and on failure raises :class:`PeerRejected` naming the peer and the reason, records it
in ``rejections`` and drops the peer; the round continues with the others. When too
few peers remain for the threshold, ``end_*``/``aggregate`` raise
:class:`ThresholdNotMet` and the round is aborted: no unmask request is issued after
an abort and no secret is reconstructed.

Dropping rules: a peer dropped before its shares were forwarded is simply left out;
a peer dropped after its shares were forwarded (it did not send, or sent a bad, masked
input, or a neighbour reports its shares failed authentication) is "dropped": its
mask key ``s_v`` is reconstructed to remove its pairwise masks, its own input (hidden
by ``b_v``) is excluded. A survivor's ``b_u`` is reconstructed, its ``s_u`` never.

Consistency check: the survivors sign the survivor and dropout lists; the unmask
request carries every signature received, and goes to the survivors that signed (at
least ``threshold`` of them, else the round aborts). A survivor that does not sign
stays in the sum (its ``b_u`` is rebuilt from the others' shares). With a
``verifier`` the server also checks each signature on arrival (keys and lists) and
drops a peer whose signature does not verify, so one bad peer cannot make every
neighbour abort; the peers check them again themselves, since the server is not
trusted to.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping

import numpy as np

from fedsilo.errors import ProtocolError

from . import keys as K
from . import shamir
from .auth import Verifier
from .config import SecAggConfig
from .errors import PeerRejected, ThresholdNotMet
from .messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    EncryptedShares,
    MaskedInput,
    MaskInputRequest,
    RoundSetup,
    SecAggResult,
    ShareKeysRequest,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskShares,
)
from .prg import LABEL_PAIR_MASK, LABEL_SELF_MASK, add_mask

__all__ = ["SecAggServer", "ServerStage"]

_CIPHERTEXT_BYTES = 2 * shamir.SHARE_BYTES + 16  # two shares + the GCM tag (AES-GCM, SM4-GCM)


class ServerStage(enum.Enum):
    ADVERTISE = "advertise"
    SHARE_KEYS = "share-keys"
    MASK_INPUT = "mask-input"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


class SecAggServer:
    """Aggregates one round of ``dim``-dimensional weighted updates from ``participants``."""

    def __init__(
        self,
        config: SecAggConfig | None,
        round_id: int,
        participants: Iterable[int],
        dim: int,
        *,
        round_seed: bytes | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.config = config or SecAggConfig()
        nodes = tuple(sorted(participants))
        if not isinstance(round_id, int) or not 0 <= round_id < 1 << 64:
            raise ProtocolError(f"round id must be an integer in [0, 2**64), got {round_id!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ProtocolError(f"vector dimension must be a positive integer, got {dim!r}")
        self.setup = RoundSetup(round_id, nodes, round_seed if round_seed is not None else os.urandom(32))
        self.graph = self.config.graph(nodes, self.setup.round_seed)
        self.encoder = self.config.encoder(len(nodes))
        self.dim = dim
        self.min_survivors = self.config.required_survivors(self.graph)
        self._verifier = verifier
        self._names: dict[str, int] = {}  # identity -> the peer whose keys it signed
        self._signatures: dict[int, SurvivorSignature] = {}
        self.stage = ServerStage.ADVERTISE
        self.active: set[int] = set(nodes)  # peers asked in the current stage and not dropped since
        self._asked: frozenset[int] = frozenset(nodes)  # peers asked at the start of the stage
        self.rejections: dict[int, str] = {}  # peer -> why it was refused (misbehaviour)
        self.dropouts: dict[int, str] = {}  # peer -> when/why it left (no answer, pruned)
        self._answered: set[int] = set()
        self._adverts: dict[int, AdvertiseKeys] = {}
        self._public_keys: set[bytes] = set()
        self._ciphertexts: dict[int, dict[int, EncryptedShares]] = {}
        self._forwarded: dict[int, frozenset[int]] = {}
        self._u2: frozenset[int] = frozenset()
        self._inputs: dict[int, np.ndarray] = {}
        self._partners: dict[int, frozenset[int]] = {}
        self._accused: dict[int, int] = {}  # accused peer -> the peer reporting it
        self._sum = np.zeros(dim + 1, dtype=np.uint64)
        self._survivors: tuple[int, ...] = ()
        self._dropped: tuple[int, ...] = ()
        self._b_holders: dict[int, frozenset[int]] = {}
        self._s_holders: dict[int, frozenset[int]] = {}
        self._unmask: dict[int, tuple[dict[int, int], dict[int, int]]] = {}
        self.lagrange_cache: dict[tuple[int, ...], list[int]] = {}

    @property
    def round_id(self) -> int:
        return self.setup.round_id

    @property
    def threshold(self) -> int:
        return self.graph.threshold

    # ------------------------------------------------------------------ common checks
    def _reject(self, peer: int, reason: str) -> PeerRejected:
        """Record ``reason``, drop ``peer`` from the current stage, return the error to raise."""
        self.rejections.setdefault(peer, reason)
        if peer in self.active:
            self.active.discard(peer)
            self._answered.discard(peer)
            self._ciphertexts.pop(peer, None)
            self._unmask.pop(peer, None)
            y = self._inputs.pop(peer, None)
            if y is not None:
                np.subtract(self._sum, y, out=self._sum)
            self._partners.pop(peer, None)
        return PeerRejected(peer, reason)

    def _admit(self, sender: object, stage: ServerStage, what: str) -> int:
        if not isinstance(sender, int) or sender not in self.setup.participants:
            # the ignore: a sender that is no int is named as it came (the rejection is about it)
            raise PeerRejected(sender, f"sent a {what} message but is not a participant of round {self.round_id}")  # type: ignore[arg-type]
        if self.stage in (ServerStage.DONE, ServerStage.ABORTED):
            raise PeerRejected(sender, f"sent a {what} message after round {self.round_id} ended")
        if stage is not self.stage:
            raise self._reject(sender, f"sent a {what} message during the {self.stage.value} stage (wrong stage)")
        if sender not in self.active:
            raise PeerRejected(
                sender,
                f"sent a {what} message it was not asked for (unsolicited: not in the active set of the {stage.value} stage)",
            )
        if sender in self._answered:
            raise self._reject(sender, f"sent a second {what} message (duplicate or replay)")
        return sender

    def _check_round(self, sender: int, round_id: object, what: str) -> None:
        if round_id != self.round_id:
            raise self._reject(
                sender,
                f"sent a {what} message for round {round_id!r}, expected round {self.round_id} (wrong round or replay)",
            )

    def _abort(self, reason: str) -> ThresholdNotMet:
        self.stage = ServerStage.ABORTED
        self._inputs.clear()
        self._unmask.clear()
        self._sum = np.zeros(0, dtype=np.uint64)
        return ThresholdNotMet(f"secure aggregation round {self.round_id} aborted: {reason}; nothing was unmasked")

    def _close(self, stage_name: str) -> set[int]:
        """Peers that answered; the silent ones become dropouts; prune thin neighbourhoods."""
        for peer in sorted(self.active - self._answered):
            self.dropouts.setdefault(peer, f"no answer at the {stage_name} stage")
        live = set(self._answered)
        t = self.threshold
        changed = True
        while changed:
            changed = False
            for u in sorted(live):
                holders = len(self.graph.neighbours[u] & live) + 1
                if holders < t:
                    live.discard(u)
                    self.dropouts[u] = (
                        f"after the {stage_name} stage only {holders} holders of its "
                        f"shares remained, below the threshold {t}"
                    )
                    changed = True
        if len(live) < self.min_survivors:
            raise self._abort(
                f"only {len(live)} peers remain after the {stage_name} stage, "
                f"{self.min_survivors} are required (threshold {t})"
            )
        return live

    # ------------------------------------------------------------------ stage 0
    def receive_advertise(self, sender: int, msg: AdvertiseKeys) -> None:
        what = "advertise-keys"
        self._admit(sender, ServerStage.ADVERTISE, what)
        if not isinstance(msg, AdvertiseKeys):
            raise self._reject(sender, f"sent a {type(msg).__name__} where AdvertiseKeys was expected")
        self._check_round(sender, msg.round_id, what)
        if msg.node_id != sender:
            raise self._reject(sender, f"sent keys claiming to be peer {msg.node_id!r}")
        for name in ("enc_public_key", "mask_public_key"):
            raw = getattr(msg, name)
            try:
                K.check_public_key(raw, suite=self.config.crypto)
            except ValueError as exc:
                raise self._reject(sender, f"advertised an invalid {name} ({exc})") from None
            if raw in self._public_keys:
                raise self._reject(sender, f"advertised a {name} already used by another peer")
        if msg.enc_public_key == msg.mask_public_key:
            raise self._reject(sender, "advertised the same key for encryption and masking")
        if not isinstance(msg.seed_commitment, bytes) or len(msg.seed_commitment) != 32:
            raise self._reject(sender, "advertised a seed commitment that is not 32 bytes")
        if self._verifier is not None:
            transcript = K.advertise_transcript(
                session=self.config.session_id,
                round_id=self.round_id,
                node_id=sender,
                enc_public_key=msg.enc_public_key,
                mask_public_key=msg.mask_public_key,
                seed_commitment=msg.seed_commitment,
                credential=msg.credential,
                suite=self.config.crypto,
            )
            try:
                name = self._verifier.verify(msg.credential, msg.signature, transcript)
            except (ValueError, TypeError) as exc:
                raise self._reject(sender, f"advertised keys whose signature does not verify ({exc})") from None
            if name in self._names:
                raise self._reject(
                    sender, f"advertised keys signed by {name!r}, who already signed for peer {self._names[name]}"
                )
            self._names[name] = sender
        self._public_keys.update((msg.enc_public_key, msg.mask_public_key))
        self._adverts[sender] = msg
        self._answered.add(sender)

    def end_advertise(self) -> dict[int, ShareKeysRequest]:
        """Close stage 0; return each live peer's request with its live neighbours' keys."""
        self._require_stage(ServerStage.ADVERTISE, "end_advertise")
        live = self._close("advertise")
        self.active, self._answered, self._asked = live, set(), frozenset(live)
        self.stage = ServerStage.SHARE_KEYS
        return {
            u: ShareKeysRequest(self.round_id, {v: self._adverts[v] for v in sorted(self.graph.neighbours[u] & live)})
            for u in sorted(live)
        }

    # ------------------------------------------------------------------ stage 1
    def receive_shares(self, sender: int, shares: Mapping[int, EncryptedShares]) -> None:
        what = "share-keys"
        self._admit(sender, ServerStage.SHARE_KEYS, what)
        if not isinstance(shares, Mapping):
            raise self._reject(sender, f"sent a {type(shares).__name__} where a map of EncryptedShares was expected")
        expected = self.graph.neighbours[sender] & self._asked  # the keys it was sent
        got = set(shares)
        if got != expected:
            missing, extra = sorted(expected - got), sorted(got - expected)
            raise self._reject(
                sender, f"sent shares for the wrong peers (missing {missing}, not live neighbours {extra})"
            )
        for dst, enc in shares.items():
            if not isinstance(enc, EncryptedShares):
                raise self._reject(sender, f"sent a {type(enc).__name__} for peer {dst} instead of EncryptedShares")
            self._check_round(sender, enc.round_id, what)
            if enc.src != sender or enc.dst != dst:
                raise self._reject(sender, f"sent shares labelled {enc.src!r} -> {enc.dst!r} under destination {dst}")
            if not isinstance(enc.nonce, bytes) or len(enc.nonce) != K.NONCE_BYTES:
                raise self._reject(sender, f"sent shares for peer {dst} with a nonce that is not {K.NONCE_BYTES} bytes")
            if not isinstance(enc.ciphertext, bytes) or len(enc.ciphertext) != _CIPHERTEXT_BYTES:
                raise self._reject(
                    sender, f"sent shares for peer {dst} with a ciphertext that is not {_CIPHERTEXT_BYTES} bytes"
                )
        self._ciphertexts[sender] = dict(shares)
        self._answered.add(sender)

    def end_share_keys(self) -> dict[int, MaskInputRequest]:
        """Close stage 1; forward to each live peer the ciphertexts addressed to it."""
        self._require_stage(ServerStage.SHARE_KEYS, "end_share_keys")
        live = self._close("share-keys")
        self._u2 = frozenset(live)
        self._forwarded = {u: frozenset(self.graph.neighbours[u] & live) for u in live}
        requests = {
            u: MaskInputRequest(self.round_id, {v: self._ciphertexts[v][u] for v in sorted(self._forwarded[u])})
            for u in sorted(live)
        }
        self._ciphertexts.clear()
        self.active, self._answered, self._asked = set(live), set(), frozenset(live)
        self.stage = ServerStage.MASK_INPUT
        return requests

    # ------------------------------------------------------------------ stage 2
    def receive_masked_input(self, sender: int, msg: MaskedInput) -> None:
        """Validate and accumulate one masked input.

        The server keeps a reference to ``msg.masked`` until :meth:`end_mask_input` (to
        take it out of the sum again should the peer be dropped); do not modify it.
        """
        what = "masked-input"
        self._admit(sender, ServerStage.MASK_INPUT, what)
        if not isinstance(msg, MaskedInput):
            raise self._reject(sender, f"sent a {type(msg).__name__} where MaskedInput was expected")
        self._check_round(sender, msg.round_id, what)
        if msg.node_id != sender:
            raise self._reject(sender, f"sent a masked input claiming to be peer {msg.node_id!r}")
        y = msg.masked
        if not isinstance(y, np.ndarray):
            raise self._reject(sender, f"sent a masked input of type {type(y).__name__}, expected a numpy array")
        if y.dtype != np.uint64:
            raise self._reject(sender, f"sent a masked input of dtype {y.dtype}, expected uint64")
        if y.shape != (self.dim + 1,):
            raise self._reject(
                sender, f"sent a masked input of shape {y.shape}, expected ({self.dim + 1},) (wrong length)"
            )
        if int(y.max()) > self.encoder.modulus - 1:
            raise self._reject(sender, f"sent masked values outside Z_M (M = 2**{self.encoder.modulus_bits})")
        rejected = msg.rejected
        if not isinstance(rejected, Mapping) or not set(rejected) <= self._forwarded[sender]:
            raise self._reject(sender, "reports share failures for peers whose shares it was not sent")
        self._partners[sender] = self._forwarded[sender] - set(rejected)
        for v in sorted(rejected):
            reason = str(rejected[v])[:200]
            self._accused.setdefault(v, sender)
            self.rejections.setdefault(
                v,
                f"peer {sender} reports that the shares peer {v} sent it failed authentication or decoding ({reason})",
            )
        y = np.ascontiguousarray(y)
        np.add(self._sum, y, out=self._sum)
        self._inputs[sender] = y
        self._answered.add(sender)

    def end_mask_input(self) -> dict[int, ConsistencyRequest]:
        """Close stage 2; check every needed secret is reconstructible BEFORE asking for shares."""
        self._require_stage(ServerStage.MASK_INPUT, "end_mask_input")
        for peer in sorted(self.active - self._answered):
            self.dropouts.setdefault(peer, "no answer at the mask-input stage")
        for v in sorted(self._accused):  # its masked input (if any) is discarded
            y = self._inputs.pop(v, None)
            if y is not None:
                np.subtract(self._sum, y, out=self._sum)
        survivors = frozenset(self._answered - set(self._accused))
        dropped = self._u2 - survivors
        self._inputs.clear()
        t = self.threshold
        if len(survivors) < self.min_survivors:
            raise self._abort(f"only {len(survivors)} masked inputs usable, {self.min_survivors} required")
        partners = {u: self._partners[u] for u in survivors}
        self._b_holders = {u: frozenset({u} | {w for w in survivors if u in partners[w]}) for u in survivors}
        self._s_holders = {v: frozenset(w for w in survivors if v in partners[w]) for v in dropped}
        for u in sorted(survivors):
            if len(self._b_holders[u]) < t:
                raise self._abort(
                    f"only {len(self._b_holders[u])} holders of survivor {u}'s seed survived, threshold {t}"
                )
        for v in sorted(dropped):
            if 0 < len(self._s_holders[v]) < t:
                raise self._abort(
                    f"only {len(self._s_holders[v])} holders of dropped peer {v}'s mask key survived, threshold {t}"
                )
        self._survivors, self._dropped = tuple(sorted(survivors)), tuple(sorted(dropped))
        self.active, self._answered, self._asked = set(survivors), set(), frozenset(survivors)
        self.stage = ServerStage.CONSISTENCY
        return {u: ConsistencyRequest(self.round_id, self._survivors, self._dropped) for u in self._survivors}

    # ------------------------------------------------------------------ consistency check
    def receive_consistency(self, sender: int, msg: SurvivorSignature) -> None:
        what = "consistency-check"
        self._admit(sender, ServerStage.CONSISTENCY, what)
        if not isinstance(msg, SurvivorSignature):
            raise self._reject(sender, f"sent a {type(msg).__name__} where SurvivorSignature was expected")
        self._check_round(sender, msg.round_id, what)
        if msg.node_id != sender:
            raise self._reject(sender, f"sent a survivor-list signature claiming to be peer {msg.node_id!r}")
        if self._verifier is not None:
            transcript = K.survivors_transcript(
                session=self.config.session_id,
                round_id=self.round_id,
                node_id=sender,
                survivors=self._survivors,
                dropped=self._dropped,
                suite=self.config.crypto,
            )
            try:
                name = self._verifier.verify(msg.credential, msg.signature, transcript)
            except (ValueError, TypeError) as exc:
                raise self._reject(
                    sender, f"signed the survivor list with a signature that does not verify ({exc})"
                ) from None
            if self._names.get(name) != sender:
                raise self._reject(sender, f"signed the survivor list as {name!r}, not as the identity of its keys")
        self._signatures[sender] = msg
        self._answered.add(sender)

    def end_consistency(self) -> dict[int, UnmaskRequest]:
        """Close the check: every signature to the survivors that signed (at least ``threshold``)."""
        self._require_stage(ServerStage.CONSISTENCY, "end_consistency")
        for peer in sorted(self.active - self._answered):
            self.dropouts.setdefault(peer, "no answer at the consistency-check stage")
        signers = frozenset(self._answered)
        if len(signers) < self.threshold:
            raise self._abort(f"only {len(signers)} survivors signed the survivor list, threshold {self.threshold}")
        signatures = dict(sorted(self._signatures.items()))
        self.active, self._answered, self._asked = set(signers), set(), signers
        self.stage = ServerStage.UNMASK
        return {u: UnmaskRequest(self.round_id, self._survivors, self._dropped, signatures) for u in sorted(signers)}

    # ------------------------------------------------------------------ stage 3
    def receive_unmask(self, sender: int, msg: UnmaskShares) -> None:
        what = "unmask"
        self._admit(sender, ServerStage.UNMASK, what)
        if not isinstance(msg, UnmaskShares):
            raise self._reject(sender, f"sent a {type(msg).__name__} where UnmaskShares was expected")
        self._check_round(sender, msg.round_id, what)
        if msg.node_id != sender:
            raise self._reject(sender, f"sent unmask shares claiming to be peer {msg.node_id!r}")
        want_b = {u for u in self._survivors if sender in self._b_holders[u]}
        want_s = {v for v in self._dropped if sender in self._s_holders[v]}
        parsed: list[dict[int, int]] = []
        for name, got, want in (("seed", msg.seed_shares, want_b), ("mask-key", msg.key_shares, want_s)):
            if not isinstance(got, Mapping) or set(got) != want:
                have = set(got) if isinstance(got, Mapping) else set()
                raise self._reject(
                    sender,
                    f"sent {name} shares for the wrong peers (missing {sorted(want - have)}, unexpected {sorted(have - want)})",
                )
            try:
                parsed.append({v: shamir.share_from_bytes(raw) for v, raw in got.items()})
            except ValueError as exc:
                raise self._reject(sender, f"sent a malformed {name} share ({exc})") from None
        self._unmask[sender] = (parsed[0], parsed[1])
        self._answered.add(sender)

    def aggregate(self) -> SecAggResult:
        """Close stage 3: reconstruct, unmask, decode; return the weighted average."""
        self._require_stage(ServerStage.UNMASK, "aggregate")
        for peer in sorted(self.active - self._answered):
            self.dropouts.setdefault(peer, "no answer at the unmask stage")
        responders = set(self._unmask)
        t = self.threshold
        jobs: dict[tuple[int, ...], list[tuple[str, int]]] = {}
        for kind, peers, holders in (("b", self._survivors, self._b_holders), ("s", self._dropped, self._s_holders)):
            for v in peers:
                if not holders[v]:
                    continue
                avail = sorted(holders[v] & responders)
                if len(avail) < t:
                    label = "seed of survivor" if kind == "b" else "mask key of dropped peer"
                    raise self._abort(f"only {len(avail)} shares of the {label} {v} arrived, threshold {t}")
                jobs.setdefault(tuple(avail[:t]), []).append((kind, v))
        # Everything is reconstructible: reconstruct, one Lagrange computation per holder set.
        seeds: dict[int, bytes] = {}
        mask_keys: dict[int, bytes] = {}
        session, suite = self.config.session_id, self.config.crypto
        for holder_set, targets in jobs.items():
            coeffs = self.lagrange_cache.get(holder_set)
            if coeffs is None:
                coeffs = self.lagrange_cache[holder_set] = shamir.lagrange_coefficients(
                    [shamir.point_of(w) for w in holder_set]
                )
            rows = [[self._unmask[w][0 if kind == "b" else 1][v] for kind, v in targets] for w in holder_set]
            for (kind, v), secret in zip(targets, shamir.combine(rows, coeffs)):
                if secret >= 1 << 256:
                    raise self._bad_share(kind, v, holder_set)
                raw = secret.to_bytes(32, "big")
                if kind == "b":
                    commitment = K.seed_commitment(raw, session=session, round_id=self.round_id, node_id=v, suite=suite)
                    if commitment != self._adverts[v].seed_commitment:
                        raise self._bad_share(kind, v, holder_set)
                    seeds[v] = raw
                else:
                    try:
                        public = K.agreement_public_key(raw, suite=suite)
                    except ValueError:  # not a private key of the suite (an SM2 scalar out of range)
                        raise self._bad_share(kind, v, holder_set) from None
                    if public != self._adverts[v].mask_public_key:
                        raise self._bad_share(kind, v, holder_set)
                    mask_keys[v] = raw
        total = self._sum
        for u in self._survivors:
            add_mask(total, seeds[u], LABEL_SELF_MASK, subtract=True, suite=suite)
        for v, raw in mask_keys.items():
            for u in sorted(self._s_holders[v]):  # survivors that masked with v
                shared = K.agree(raw, self._adverts[u].mask_public_key, suite=suite)
                seed = K.mask_seed(shared, session=session, round_id=self.round_id, u=u, v=v, suite=suite)
                add_mask(total, seed, LABEL_PAIR_MASK, subtract=v > u, suite=suite)  # undo u's sign for v
        total &= self.encoder.mask
        try:
            values, weight_sum = self.encoder.decode_sum(total, len(self._survivors))
        except ValueError as exc:
            self.stage = ServerStage.ABORTED
            raise ProtocolError(
                f"round {self.round_id}: the masks did not cancel ({exc}); a peer masked with "
                f"a different set of neighbours than the server forwarded. No average is released"
            ) from None
        if weight_sum <= 0:
            self.stage = ServerStage.ABORTED
            raise ProtocolError(f"round {self.round_id}: the survivors' total weight is zero; no average exists")
        self.stage = ServerStage.DONE
        self._sum = np.zeros(0, dtype=np.uint64)
        average = values / weight_sum
        bound = self.encoder.average_error_bound(len(self._survivors), weight_sum)
        return SecAggResult(
            average,
            weight_sum * float(self.config.max_weight),
            self._survivors,
            self._dropped,
            bound,
            dict(self.rejections),
        )

    # ------------------------------------------------------------------ misc
    def _bad_share(self, kind: str, v: int, holders: tuple[int, ...]) -> ProtocolError:
        self.stage = ServerStage.ABORTED
        what = "self-mask seed" if kind == "b" else "mask key"
        return ProtocolError(
            f"round {self.round_id}: the {what} of peer {v} reconstructed from the shares of peers "
            f"{list(holders)} does not match its commitment: one of them sent a corrupted share; "
            f"round aborted"
        )

    def _require_stage(self, stage: ServerStage, method: str) -> None:
        if self.stage is not stage:
            raise ProtocolError(f"round {self.round_id}: {method}() called in the {self.stage.value} stage")
