"""A driver for multi-release SecAgg+ sessions between a host and in-process peers."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fedsilo.privacy.secagg import PeerRejected, SecAggConfig, ThresholdNotMet
from fedsilo.privacy.secagg.session import SessionClient
from fedsilo.privacy.secagg.session_server import ReleaseServer, SessionServer

from ._harness import consortium

CONFIGS = {"a": SecAggConfig(clip=1.0, bits=24), "b": SecAggConfig(clip=2.0, bits=20)}


class Session:
    """``n`` peers with identities; ``open`` runs the set-up, ``release`` one release with optional dropouts."""

    def __init__(self, n: int, releases: int, configs=CONFIGS, session_round: int = 1) -> None:
        self.nodes = [1000 + 17 * i for i in range(n)]
        self.signers, self.verifier = consortium(self.nodes)
        self.configs = configs
        self.clients = {
            u: SessionClient(u, configs, signer=self.signers[u], verifier=self.verifier) for u in self.nodes
        }
        self.releases = releases
        self.host = self.new_host(session_round)

    def new_host(self, session_round: int) -> SessionServer:
        return SessionServer(self.configs, session_round, self.nodes, self.releases, verifier=self.verifier)

    def open(self, silent: Iterable[int] = ()) -> frozenset[int]:
        host, silent = self.host, set(silent)
        for u in self.nodes:
            if u not in silent:
                host.receive_keys(u, self.clients[u].keys(host.setup))
        for u, peer_keys in host.end_keys().items():
            host.receive_shares(u, self.clients[u].share(host.session_round, peer_keys))
        for u, received in host.end_shares().items():
            host.receive_accept(u, self.clients[u].accept(host.session_round, received))
        return host.end_accept()

    def release(
        self, r: int, purpose: str, inputs: dict[int, np.ndarray], drop: Iterable[int] = ()
    ) -> tuple[ReleaseServer, np.ndarray | None]:
        """Peers in ``drop`` do not send their masked input; returns the server and the decoded sum (or None)."""
        drop = set(drop)
        dim = len(next(iter(inputs.values())))
        server, requests = self.host.release(r, purpose, dim)
        try:
            for u, request in requests.items():
                if u not in drop:
                    try:
                        server.receive_masked_input(u, self.clients[u].mask(request, inputs[u]))
                    except PeerRejected:
                        pass
            checks = server.end_mask_input()
            for u, c in checks.items():
                server.receive_consistency(u, self.clients[u].sign(self.host.session_round, r, c.survivors, c.dropped))
            for u, q in server.end_consistency().items():
                server.receive_unmask(
                    u, self.clients[u].unmask(self.host.session_round, r, q.survivors, q.dropped, q.signatures)
                )
            result = server.aggregate()
        except ThresholdNotMet:
            return server, None
        return server, result.average * result.total_weight
