"""The host's side of multi-release SecAgg+ sessions (the protocol and its safety rules: ``session``).

Usage (the caller moves messages; ``sender`` is the transport-authenticated node id)::

    host = SessionServer(configs, session_round, participants, releases, verifier=...)
    host.setup                                         # -> every client.keys
    host.receive_keys(sender, SessionKeys)
    requests = host.end_keys()                         # {node: {v: SessionKeys}} -> client.share
    host.receive_shares(sender, {dst: EncryptedShares})
    requests = host.end_shares()                       # {node: {src: EncryptedShares}} -> client.accept
    host.receive_accept(sender, rejected)
    host.end_accept()                                  # the session's members
    server, requests = host.release(r, purpose, dim)   # {node: ReleaseRequest} -> client.mask
    ... then exactly the plain server's stages from mask input on:
    server.receive_masked_input / end_mask_input / receive_consistency / end_consistency /
    receive_unmask / aggregate

A release's server is a `SecAggServer` put straight into its mask-input stage with the
release's public values (every member's commitment to ``b_v^r`` under the session
scope as session id and ``r`` as round id), so the checks of a plain round (lengths,
range, the survivor lists, reconstruction of the self-mask seeds against their
commitments, the abort below the threshold) apply unchanged. Two differences: the
survivors vouch for the lists with pairwise MACs that only their recipients can check
(the server keeps and relays them), and a dropped peer's pairwise masks are removed
with the seeds its surviving neighbours reveal (`ReleaseServer.aggregate`).

The host mirrors the peers' rules: a release index is used once and in increasing
order; a peer listed as dropped in a release (its pairwise seeds of it are revealed)
leaves the session's members, and peers that refused to mask are removed by the
caller (`drop`). Each release still requires the session's required survivors out of
its ``n`` set-up peers, so dropouts accumulate until a new session is opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace

from fedsilo.errors import ProtocolError

from . import keys as K
from . import shamir
from .auth import Verifier
from .config import SecAggConfig
from .errors import PeerRejected, ThresholdNotMet
from .messages import AdvertiseKeys, ConsistencyRequest, EncryptedShares, SecAggResult
from .prg import LABEL_PAIR_MASK, add_mask
from .server import SecAggServer, ServerStage
from .session import (
    MAX_RELEASES,
    ReleaseRequest,
    SessionKeys,
    SessionSetup,
    check_configs,
    keys_transcript,
    session_scope,
)

__all__ = ["SessionServer", "ReleaseServer"]


class SessionServer:
    """Set-up of one session among ``participants`` for up to ``releases`` releases, then its releases."""

    def __init__(
        self,
        configs: Mapping[str, SecAggConfig],
        session_round: int,
        participants: Iterable[int],
        releases: int,
        *,
        round_seed: bytes | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.configs = dict(configs)
        self.base = check_configs(self.configs)
        if not isinstance(releases, int) or not 1 <= releases <= MAX_RELEASES:
            raise ProtocolError(f"a session has 1 to {MAX_RELEASES} releases, got {releases!r}")
        nodes = tuple(sorted(participants))
        self.scope = session_scope(self.base.session_id, session_round)
        self.setup = SessionSetup(session_round, nodes, round_seed or os.urandom(32), releases)
        self.graph = self.base.graph(nodes, self.setup.round_seed)
        self.min_survivors = self.base.required_survivors(self.graph)
        self.verifier = verifier
        self.stage = "keys"
        self.rejections: dict[int, str] = {}
        self.dropouts: dict[int, str] = {}
        self.members: frozenset[int] = frozenset()
        self.last_release = 0
        self._active: set[int] = set(nodes)
        self._answered: set[int] = set()
        self._keys: dict[int, SessionKeys] = {}
        self._names: dict[str, int] = {}
        self._public: set[bytes] = set()
        self._ciphertexts: dict[int, dict[int, EncryptedShares]] = {}
        self._forwarded: dict[int, frozenset[int]] = {}
        self._accused: set[int] = set()

    @property
    def session_round(self) -> int:
        return self.setup.session_round

    # ------------------------------------------------------------------ common
    def _reject(self, peer: int, reason: str) -> PeerRejected:
        self.rejections.setdefault(peer, reason)
        self._active.discard(peer)
        self._answered.discard(peer)
        return PeerRejected(peer, reason)

    def _admit(self, sender: object, stage: str) -> int:
        if not isinstance(sender, int) or sender not in self.setup.participants:
            raise PeerRejected(sender, f"is not a participant of session {self.session_round}")  # type: ignore[arg-type]
        if self.stage != stage:
            raise self._reject(sender, f"sent a {stage} message during the {self.stage} stage")
        if sender not in self._active:
            raise PeerRejected(sender, f"sent a {stage} message it was not asked for")
        if sender in self._answered:
            raise self._reject(sender, f"sent a second {stage} message (duplicate or replay)")
        return sender

    def _close(self, stage: str, live: set[int]) -> set[int]:
        """Silent peers become dropouts; peers with fewer than ``t`` live holders are pruned; abort below the minimum."""
        for peer in sorted(self._active - live):
            self.dropouts.setdefault(peer, f"no (valid) answer at the session's {stage} stage")
        t = self.graph.threshold
        changed = True
        while changed:
            changed = False
            for u in sorted(live):
                if len(self.graph.neighbours[u] & live) + 1 < t:
                    live.discard(u)
                    self.dropouts[u] = f"after the session's {stage} stage fewer than {t} holders of its shares remain"
                    changed = True
        if len(live) < self.min_survivors:
            self.stage = "aborted"
            raise ThresholdNotMet(
                f"session {self.session_round} aborted at the {stage} stage: {len(live)} peers remain, "
                f"{self.min_survivors} required; nothing was unmasked or released"
            )
        self._active, self._answered = set(live), set()
        return live

    # ------------------------------------------------------------------ set-up 1
    def receive_keys(self, sender: int, msg: SessionKeys) -> None:
        self._admit(sender, "keys")
        n = self.setup.releases
        if not isinstance(msg, SessionKeys) or msg.node_id != sender or msg.session_round != self.session_round:
            raise self._reject(sender, "sent keys that are malformed or for another peer or session")
        if len(msg.seed_commitments) != n:
            raise self._reject(sender, f"sent seed commitments for a number of releases other than {n}")
        raws = (msg.enc_public_key, msg.mask_public_key)
        for raw in raws:
            try:
                K.check_public_key(raw)
            except ValueError as exc:
                raise self._reject(sender, f"advertised an invalid X25519 key ({exc})") from None
        if len(set(raws)) != len(raws) or self._public & set(raws):
            raise self._reject(sender, "advertised a key twice or a key of another peer")
        if any(not isinstance(c, bytes) or len(c) != 32 for c in msg.seed_commitments):
            raise self._reject(sender, "advertised a seed commitment that is not 32 bytes")
        if self.verifier is not None:
            try:
                name = self.verifier.verify(
                    msg.credential, msg.signature, keys_transcript(self.scope, self.session_round, msg)
                )
            except (ValueError, TypeError) as exc:
                raise self._reject(sender, f"advertised keys whose signature does not verify ({exc})") from None
            if name in self._names:
                raise self._reject(sender, f"advertised keys signed by {name!r}, who signed for another peer")
            self._names[name] = sender
        self._public.update(raws)
        self._keys[sender] = msg
        self._answered.add(sender)

    def end_keys(self) -> dict[int, dict[int, SessionKeys]]:
        """Close the key stage: each live peer gets its live neighbours' signed keys."""
        self._require("keys")
        live = self._close("keys", set(self._answered))
        self.stage = "shares"
        return {u: {v: self._keys[v] for v in sorted(self.graph.neighbours[u] & live)} for u in sorted(live)}

    # ------------------------------------------------------------------ set-up 2
    def receive_shares(self, sender: int, shares: Mapping[int, EncryptedShares]) -> None:
        self._admit(sender, "shares")
        expected = self.graph.neighbours[sender] & self._active
        if not isinstance(shares, Mapping) or set(shares) != expected:
            raise self._reject(sender, "sent shares for the wrong peers")
        size = self.setup.releases * shamir.SHARE_BYTES + 16
        for dst, enc in shares.items():
            if (
                not isinstance(enc, EncryptedShares)
                or (enc.round_id, enc.src, enc.dst) != (self.session_round, sender, dst)
                or not isinstance(enc.nonce, bytes)
                or len(enc.nonce) != K.NONCE_BYTES
                or not isinstance(enc.ciphertext, bytes)
                or len(enc.ciphertext) != size
            ):
                raise self._reject(sender, f"sent a malformed or misaddressed share ciphertext for peer {dst}")
        self._ciphertexts[sender] = dict(shares)
        self._answered.add(sender)

    def end_shares(self) -> dict[int, dict[int, EncryptedShares]]:
        """Close the share stage: forward to each live peer the ciphertexts addressed to it."""
        self._require("shares")
        live = self._close("shares", set(self._answered))
        self._forwarded = {u: frozenset(self.graph.neighbours[u] & live) for u in live}
        self.stage = "accept"
        out = {u: {v: self._ciphertexts[v][u] for v in sorted(self._forwarded[u])} for u in sorted(live)}
        self._ciphertexts.clear()
        return out

    # ------------------------------------------------------------------ set-up 3
    def receive_accept(self, sender: int, rejected: Mapping[int, str]) -> None:
        self._admit(sender, "accept")
        if not isinstance(rejected, Mapping) or not set(rejected) <= self._forwarded[sender]:
            raise self._reject(sender, "reports share failures for peers whose shares it was not sent")
        for v in sorted(rejected):
            self._accused.add(v)
            self.rejections.setdefault(v, f"peer {sender} reports that its shares failed ({str(rejected[v])[:200]})")
        self._answered.add(sender)

    def end_accept(self) -> frozenset[int]:
        """Close the set-up: the members are the peers that accepted and were not accused by a neighbour."""
        self._require("accept")
        live = self._close("accept", set(self._answered) - self._accused)
        self.members = frozenset(live)
        self.stage = "ready"
        return self.members

    # ------------------------------------------------------------------ releases
    def drop(self, peers: Iterable[int], reason: str) -> None:
        """Take peers out of the session's members (e.g. they refused a release); they never come back."""
        for v in peers:
            if v in self.members:
                self.dropouts.setdefault(v, reason)
        self.members = self.members - frozenset(peers)

    def release(
        self, release: int, purpose: str, dim: int, participants: Iterable[int] | None = None
    ) -> tuple[ReleaseServer, dict[int, ReleaseRequest]]:
        """Start release ``release`` (next index only) among the members (or a subset of them)."""
        self._require("ready")
        if not isinstance(release, int) or not self.last_release < release <= self.setup.releases:
            raise ProtocolError(
                f"session {self.session_round}: release {release!r} refused: releases run in increasing order "
                f"from {self.last_release + 1} to {self.setup.releases}, each index once"
            )
        if purpose not in self.configs:
            raise ProtocolError(f"session {self.session_round}: unknown release purpose {purpose!r}")
        parts = self.members if participants is None else frozenset(participants)
        if not parts <= self.members:
            raise ProtocolError(f"peers {sorted(parts - self.members)} are not (or no longer) members of the session")
        self.last_release = release
        if len(parts) < self.min_survivors:
            raise ThresholdNotMet(
                f"session {self.session_round}, release {release}: {len(parts)} members left, "
                f"{self.min_survivors} required, so nothing was unmasked; open a new session"
            )
        server = ReleaseServer(self, self.configs[purpose], release, parts, dim)
        request = ReleaseRequest(self.session_round, release, purpose, tuple(sorted(parts)))
        return server, {u: request for u in sorted(parts)}

    def _require(self, stage: str) -> None:
        if self.stage != stage:
            raise ProtocolError(f"session {self.session_round}: expected the {stage} stage, in the {self.stage} stage")


class ReleaseServer(SecAggServer):
    """One release of a session: a `SecAggServer` in its mask-input stage with the release's public keys."""

    def __init__(self, session: SessionServer, config: SecAggConfig, release: int, parts: frozenset[int], dim: int):
        super().__init__(
            replace(config, session_id=session.scope),
            release,
            session.setup.participants,
            dim,
            round_seed=session.setup.round_seed,
            verifier=None,  # the survivors vouch for the lists with pairwise MACs, which only their recipients check
        )
        self.session = session
        i = release - 1
        self._adverts = {
            v: AdvertiseKeys(release, v, k.enc_public_key, k.mask_public_key, k.seed_commitments[i])
            for v, k in session._keys.items()
            if v in parts
        }
        self._forwarded = {u: frozenset(self.graph.neighbours[u] & parts) for u in parts}
        self._u2 = parts
        self.active, self._answered, self._asked = set(parts), set(), parts
        self.stage = ServerStage.MASK_INPUT

    def end_mask_input(self) -> dict[int, ConsistencyRequest]:
        """The plain server's close; every peer listed as dropped leaves the session (its ``s^r`` may be rebuilt)."""
        try:
            requests = super().end_mask_input()
        except ThresholdNotMet:
            self.session.drop(set(self._u2) - self._answered, f"no valid masked input in release {self.round_id}")
            raise
        self.session.drop(self._dropped, f"dropped in release {self.round_id}")
        return requests

    def aggregate(self) -> SecAggResult:
        """Remove the dropped peers' pairwise masks with the seeds their surviving neighbours revealed, then the
        plain server's reconstruction of the survivors' self-mask seeds, unmasking and decoding.

        In a session a dropped peer's mask key is never reconstructed (it serves every release): each surviving
        neighbour ``u`` of a dropped ``v`` reveals their pairwise seed of this release (in the place of a share of
        ``s_v``), so every one of them must answer; otherwise the release aborts, nothing released.
        """
        self._require_stage(ServerStage.UNMASK, "aggregate")
        for v in self._dropped:
            for u in sorted(self._s_holders[v]):
                if u not in self._unmask:
                    raise self._abort(
                        f"survivor {u} did not reveal its pairwise seed with dropped peer {v} in release {self.round_id}"
                    )
        for v in self._dropped:
            for u in sorted(self._s_holders[v]):
                seed = self._unmask[u][1][v]
                if seed >= 1 << 256:
                    self.stage = ServerStage.ABORTED
                    raise ProtocolError(f"release {self.round_id}: peer {u} revealed a malformed pairwise seed")
                add_mask(self._sum, seed.to_bytes(32, "big"), LABEL_PAIR_MASK, subtract=v > u)  # undo u's sign for v
        dropped, self._dropped, self._s_holders = self._dropped, (), {}
        return replace(super().aggregate(), dropped=dropped)
