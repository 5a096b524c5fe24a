"""The host's secure sums over a multi-release SecAgg+ session: one key set-up for many histogram releases.

`fedsilo.privacy.secagg.session` states the protocol and its safety rules. Here the
host plays it with peers it reaches by method calls, as `secure_sum` plays a plain
round: `SecureSession` runs the set-up (keys, shares, accept) when it is created,
then `sum` runs one release (masked input, consistency check, unmask) and returns a
`SumOutcome` like `secure_sum`'s.

How messages move is the caller's: by default the host calls each peer's method in
this process; an ``exchange`` (`Exchange`) instead delivers one stage to every peer at
once and returns the answers it got (a Flower ServerApp sends one message per peer
and waits for the replies: `fedsilo.peers.gbdt.server_app`). A peer that sends no
answer is silent: the session's server counts it as a dropout at that stage.

A peer that raises or that the host refuses is dropped from the release with its
reason recorded under its name, and leaves the session (the peers would refuse it
anyway once it was listed as dropped); a release below the threshold is aborted before
anything is unmasked. When too few members remain, `sum` aborts too: the caller opens
a new session, in which every peer takes part again with fresh keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from fedsilo.errors import FedsiloError
from fedsilo.privacy.secagg import (
    ConsistencyRequest,
    EncryptedShares,
    MaskedInput,
    PeerRejected,
    SecAggConfig,
    SurvivorSignature,
    ThresholdNotMet,
    UnmaskRequest,
    UnmaskShares,
    Verifier,
)
from fedsilo.privacy.secagg.session import ReleaseRequest, SessionKeys, SessionSetup
from fedsilo.privacy.secagg.session_server import SessionServer

from .secure_sum import SumOutcome


class SessionPeer(Protocol):
    """A bank as the host reaches it in a session: its name, node id and the six answers."""

    name: str
    node_id: int

    def session_keys(self, setup: SessionSetup) -> SessionKeys: ...

    def session_share(self, session_round: int, peer_keys: dict[int, SessionKeys]) -> dict[int, EncryptedShares]: ...

    def session_accept(self, session_round: int, received: dict[int, EncryptedShares]) -> dict[int, str]: ...

    def session_mask(self, request: ReleaseRequest) -> MaskedInput: ...

    def session_sign(self, session_round: int, release: int, request: ConsistencyRequest) -> SurvivorSignature: ...

    def session_unmask(self, session_round: int, release: int, request: UnmaskRequest) -> UnmaskShares: ...


Exchange = Callable[[str, Mapping[int, tuple[Any, ...]]], Mapping[int, Any]]
"""``exchange(method, {node: args})``: each node's answer to ``method(*args)``, the `FedsiloError`
it answered with (a refusal), or nothing for a node that did not answer."""


def in_process(peers: Mapping[int, SessionPeer]) -> Exchange:
    """The exchange that calls each peer's method in this process, in node order."""

    def exchange(method: str, calls: Mapping[int, tuple[Any, ...]]) -> dict[int, Any]:
        answers: dict[int, Any] = {}
        for u, args in calls.items():
            try:
                answers[u] = getattr(peers[u], method)(*args)
            except FedsiloError as error:  # the peer refused (its own check) or failed
                answers[u] = error
        return answers

    return exchange


class SecureSession:
    """One session among ``peers`` for up to ``releases`` sums (see the module docstring).

    Creating it runs the set-up and raises `ThresholdNotMet` when too few peers complete
    it (nothing was released); ``refused`` and ``dropped`` then name who failed and why.
    """

    def __init__(
        self,
        configs: Mapping[str, SecAggConfig],
        session_round: int,
        peers: Sequence[SessionPeer],
        releases: int,
        verifier: Verifier | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        self.peers = {p.node_id: p for p in peers}
        self.exchange = exchange or in_process(self.peers)
        self.names = {p.node_id: p.name for p in peers}
        self.host = SessionServer(configs, session_round, self.peers, releases, verifier=verifier)
        self.refused: dict[str, str] = {}
        self._reported: set[str] = set()  # refusals already in a release's outcome (set-up ones go in the first)
        self.release_index = 0
        host, r = self.host, session_round
        try:
            self._stage("session_keys", {u: (host.setup,) for u in self.peers}, host.receive_keys)
            shares = {u: (r, keys) for u, keys in host.end_keys().items()}
            self._stage("session_share", shares, host.receive_shares)
            accepts = {u: (r, received) for u, received in host.end_shares().items()}
            self._stage("session_accept", accepts, host.receive_accept)
            host.end_accept()
        finally:
            self.dropped = {self.names[u]: why for u, why in host.dropouts.items()}

    @property
    def remaining(self) -> int:
        """Releases left in the session."""
        return self.host.setup.releases - self.release_index

    def can_serve(self, releases: int) -> bool:
        """Whether ``releases`` more releases fit and enough members remain for them."""
        return self.remaining >= releases and len(self.host.members) >= self.host.min_survivors

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self.names[u] for u in sorted(self.host.members))

    def _stage(
        self, method: str, calls: Mapping[int, tuple[Any, ...]], deliver: Callable[[int, Any], None]
    ) -> set[int]:
        """Deliver each answer to ``method``; returns the nodes whose answer was delivered.

        A refusal on either side is recorded under the peer's name; a silent peer is left
        for the server to count as dropped.
        """
        answers = self.exchange(method, calls)
        delivered: set[int] = set()
        for u in calls:
            if u not in answers:
                continue
            message = answers[u]
            if isinstance(message, FedsiloError):
                self.refused[self.names[u]] = str(message)
                continue
            try:
                deliver(u, message)
            except PeerRejected as rejected:
                self.refused[self.names[u]] = rejected.reason
                continue
            delivered.add(u)
        return delivered

    def sum(self, purpose: str, dim: int) -> SumOutcome:
        """The next release: the sum of the members' ``dim``-vectors for ``purpose``, or an aborted outcome."""
        self.release_index += 1
        r, s = self.release_index, self.host.session_round
        out = SumOutcome(None)
        server = None
        try:
            server, requests = self.host.release(r, purpose, dim)
            masked = self._stage("session_mask", {u: (q,) for u, q in requests.items()}, server.receive_masked_input)
            failed = sorted(set(requests) - masked)
            if failed:
                self.host.drop(failed, f"refused or missed release {r}")
            checks = {u: (s, r, check) for u, check in server.end_mask_input().items()}
            self._stage("session_sign", checks, server.receive_consistency)
            unmasks = {u: (s, r, unmask) for u, unmask in server.end_consistency().items()}
            self._stage("session_unmask", unmasks, server.receive_unmask)
            result = server.aggregate()
        except ThresholdNotMet as aborted:
            out.aborted = str(aborted)
        else:
            out.sums = result.average * result.total_weight
            out.survivors = tuple(self.names[u] for u in result.survivors)
        if server is not None:
            out.dropped = {self.names[u]: why for u, why in server.dropouts.items()}
        out.refused = {n: why for n, why in self.refused.items() if n not in self._reported}
        self._reported |= set(out.refused)
        return out
