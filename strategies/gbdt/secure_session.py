"""The host's secure sums over a multi-release SecAgg+ session: one key set-up for many histogram releases.

`fedsilo.privacy.secagg.session` states the protocol and its safety rules. Here the
host plays it with peers it reaches by method calls, as `secure_sum` plays a plain
round: `SecureSession` runs the set-up (keys, shares, accept) when it is created,
then `sum` runs one release (masked input, consistency check, unmask) and returns a
`SumOutcome` like `secure_sum`'s.

A peer that raises or that the host refuses is dropped from the release with its
reason recorded under its name, and leaves the session (the peers would refuse it
anyway once it was listed as dropped); a release below the threshold is aborted before
anything is unmasked. When too few members remain, `sum` aborts too: the caller opens
a new session, in which every peer takes part again with fresh keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
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
    ) -> None:
        self.peers = {p.node_id: p for p in peers}
        self.names = {p.node_id: p.name for p in peers}
        self.host = SessionServer(configs, session_round, self.peers, releases, verifier=verifier)
        self.refused: dict[str, str] = {}
        self.release_index = 0
        host, r = self.host, session_round
        try:
            for u, peer in self.peers.items():
                self._ask(u, peer.session_keys, host.setup, host.receive_keys)
            for u, keys in host.end_keys().items():
                self._ask(u, partial(self.peers[u].session_share, r), keys, host.receive_shares)
            for u, received in host.end_shares().items():
                self._ask(u, partial(self.peers[u].session_accept, r), received, host.receive_accept)
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

    def _ask(self, node: int, call: Callable[[Any], Any], request: Any, deliver: Callable[[int, Any], None]) -> bool:
        """``deliver(node, call(request))``; a refusal on either side is recorded and returns False."""
        try:
            message = call(request)
        except FedsiloError as error:  # the peer refused (its own check) or failed
            self.refused[self.names[node]] = str(error)
            return False
        try:
            deliver(node, message)
        except PeerRejected as rejected:
            self.refused[self.names[node]] = rejected.reason
            return False
        return True

    def sum(self, purpose: str, dim: int) -> SumOutcome:
        """The next release: the sum of the members' ``dim``-vectors for ``purpose``, or an aborted outcome."""
        self.release_index += 1
        r, s = self.release_index, self.host.session_round
        out = SumOutcome(None)
        refused_before = set(self.refused)
        server = None
        try:
            server, requests = self.host.release(r, purpose, dim)
            for u, request in requests.items():
                if not self._ask(u, self.peers[u].session_mask, request, server.receive_masked_input):
                    self.host.drop([u], f"refused release {r}")
            for u, check in server.end_mask_input().items():
                self._ask(u, partial(self.peers[u].session_sign, s, r), check, server.receive_consistency)
            for u, unmask in server.end_consistency().items():
                self._ask(u, partial(self.peers[u].session_unmask, s, r), unmask, server.receive_unmask)
            result = server.aggregate()
        except ThresholdNotMet as aborted:
            out.aborted = str(aborted)
        else:
            out.sums = result.average * result.total_weight
            out.survivors = tuple(self.names[u] for u in result.survivors)
        if server is not None:
            out.dropped = {self.names[u]: why for u, why in server.dropouts.items()}
        out.refused = {n: why for n, why in self.refused.items() if n not in refused_before}
        return out
