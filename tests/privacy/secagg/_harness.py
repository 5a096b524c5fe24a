"""A driver that plays one SecAgg+ round between a server and in-process clients."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsilo.privacy.crypto_suite import get_suite
from fedsilo.privacy.secagg import (
    Ed25519Directory,
    Ed25519Identity,
    PeerRejected,
    SecAggClient,
    SecAggConfig,
    SecAggResult,
    SecAggServer,
    ServerStage,
    Signer,
    Verifier,
)
from fedsilo.privacy.secagg.auth import SuiteDirectory, SuiteIdentity

ROUND = 7
CONFIG = SecAggConfig(clip=1.0, bits=24, max_weight=1000.0)

Tamper = Callable[[int, object], object]


def consortium(nodes: Iterable[int], suite: str = "standard") -> tuple[dict[int, Signer], Verifier]:
    """A simulated consortium: one named identity per node, and the directory of them all.

    Ed25519 under the standard suite; the suite's own signatures (SM2) under any other.
    """
    if suite == "standard":
        signers = {u: Ed25519Identity(f"bank-{u:x}", Ed25519PrivateKey.generate()) for u in nodes}
        return signers, Ed25519Directory({s.name: s.public_key() for s in signers.values()})
    crypto = get_suite(suite)
    identities = {u: SuiteIdentity(f"bank-{u:x}", crypto, crypto.generate_signing_key()) for u in nodes}
    return dict(identities), SuiteDirectory(crypto, {s.name: s.public_key() for s in identities.values()})


def stranger(suite: str) -> Signer:
    """An identity outside the consortium (the host's own key), of the suite's signature kind."""
    if suite == "standard":
        return Ed25519Identity("the-host", Ed25519PrivateKey.generate())
    crypto = get_suite(suite)
    return SuiteIdentity("the-host", crypto, crypto.generate_signing_key())


class Harness:
    """Drive the five stages; peers in ``gone`` stop answering from the stage they drop at.

    Peers sign and verify with a simulated consortium (``authenticated=False``: none), under
    ``suite`` (default: the config's).
    """

    def __init__(
        self,
        n: int,
        dim: int = 32,
        config: SecAggConfig = CONFIG,
        seed: int = 0,
        authenticated: bool = True,
        suite: str | None = None,
    ) -> None:
        if suite is not None:
            config = dataclasses.replace(config, suite=suite)
        rng = np.random.default_rng(seed)
        # 64-bit node ids, as Flower uses, in no particular order
        ids: set[int] = set()
        while len(ids) < n:
            v = int(rng.integers(0, 2**62))
            ids.add(2**64 - 1 - v if seed % 2 else v)  # odd seeds: ids near the top of uint64
        self.nodes = sorted(ids)
        self.config = config
        self.dim = dim
        self.signers, self.verifier = consortium(self.nodes, config.suite) if authenticated else ({}, None)
        self.server = SecAggServer(config, ROUND, self.nodes, dim, round_seed=rng.bytes(32), verifier=self.verifier)
        self.clients = {u: self.make_client(u) for u in self.nodes}
        c = config.clip
        self.inputs = {u: rng.uniform(-c, c, dim) for u in self.nodes}
        self.weights = {u: float(rng.uniform(0.1, 1.0)) * config.max_weight for u in self.nodes}
        self.gone: set[int] = set()
        self.refused: dict[int, PeerRejected] = {}
        self.requests: dict = {}

    def make_client(self, u: int) -> SecAggClient:
        return SecAggClient(u, self.config, signer=self.signers.get(u), verifier=self.verifier)

    def _deliver(self, receive, u, msg, tamper: Tamper | None):
        if tamper is not None:
            msg = tamper(u, msg)
        try:
            receive(u, msg)
        except PeerRejected as exc:
            self.refused[u] = exc

    def advertise(self, drop: Iterable[int] = (), tamper: Tamper | None = None) -> None:
        self.gone |= set(drop)
        s = self.server.setup
        for u in self.nodes:
            if u not in self.gone:
                adv = self.clients[u].advertise_keys(s.round_id, s.participants, s.round_seed)
                self._deliver(self.server.receive_advertise, u, adv, tamper)
        self.requests = self.server.end_advertise()

    def share(self, drop: Iterable[int] = (), tamper: Tamper | None = None) -> None:
        self.gone |= set(drop)
        for u, req in self.requests.items():
            if u not in self.gone:
                out = self.clients[u].share_keys(req.round_id, req.peer_keys)
                self._deliver(self.server.receive_shares, u, out, tamper)
        self.requests = self.server.end_share_keys()

    def mask(self, drop: Iterable[int] = (), tamper: Tamper | None = None) -> None:
        self.gone |= set(drop)
        for u, req in self.requests.items():
            if u not in self.gone:
                msg = self.clients[u].mask_input(req.round_id, self.inputs[u], self.weights[u], req.shares)
                self._deliver(self.server.receive_masked_input, u, msg, tamper)
        self.requests = self.server.end_mask_input()

    def check(self, drop: Iterable[int] = (), tamper: Tamper | None = None) -> None:
        """The consistency check: survivors sign the lists they were given."""
        self.gone |= set(drop)
        for u, req in self.requests.items():
            if u not in self.gone:
                msg = self.clients[u].sign_survivors(req.round_id, req.survivors, req.dropped)
                self._deliver(self.server.receive_consistency, u, msg, tamper)
        self.requests = self.server.end_consistency()

    def unmask(self, drop: Iterable[int] = (), tamper: Tamper | None = None) -> SecAggResult:
        """Stage 3 (after the consistency check, run here first if it has not run)."""
        if self.server.stage is ServerStage.CONSISTENCY:
            self.check()
        self.gone |= set(drop)
        for u, req in self.requests.items():
            if u not in self.gone:
                msg = self.clients[u].unmask(req.round_id, req.survivors, req.dropped, req.signatures)
                self._deliver(self.server.receive_unmask, u, msg, tamper)
        return self.server.aggregate()

    def run(self, drops: dict[str, Iterable[int]] | None = None) -> SecAggResult:
        drops = drops or {}
        self.advertise(drops.get("advertise", ()))
        self.share(drops.get("share", ()))
        self.mask(drops.get("mask", ()))
        return self.unmask(drops.get("unmask", ()))

    def plaintext(self, survivors: Iterable[int]) -> tuple[np.ndarray, float]:
        """Exact weighted average (float64) of the given peers' clipped inputs, and total weight."""
        peers = sorted(survivors)
        c = self.config.clip
        xs = np.stack([np.clip(self.inputs[u], -c, c) for u in peers])
        ws = np.array([self.weights[u] for u in peers])
        return np.average(xs, axis=0, weights=ws), float(ws.sum())

    def check_exact(self, result: SecAggResult) -> float:
        """Assert the secure average is within the stated quantization bound; return the error."""
        plain, total = self.plaintext(result.survivors)
        enc = self.server.encoder
        n = len(result.survivors)
        bound = enc.average_error_bound(n, total / self.config.max_weight)
        err = float(np.max(np.abs(result.average - plain)))
        assert err <= bound, f"error {err} exceeds the stated bound {bound}"
        assert bound < 1e-5
        weight_slack = n / (2 * enc.weight_scale) * self.config.max_weight
        assert abs(result.total_weight - total) <= weight_slack + 1e-9
        return err


def deterministic_keys(monkeypatch, seed: int = 1) -> None:
    """Make key pairs and self-mask seeds reproducible, so statistical tests are deterministic."""
    from fedsilo.privacy.secagg import client as client_mod
    from fedsilo.privacy.secagg import keys as keys_mod

    counter = {"i": 0}

    def _bytes(n: int) -> bytes:
        counter["i"] += 1
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{counter['i']}/{len(out)}".encode()).digest()
        return out[:n]

    class _Os:
        @staticmethod
        def urandom(n: int) -> bytes:
            return _bytes(n)

    def _keypair(*, suite=keys_mod.STANDARD) -> tuple[bytes, bytes]:
        private = _bytes(32)
        return private, suite.agreement_public_key(private)

    monkeypatch.setattr(keys_mod, "agreement_keypair", _keypair)
    monkeypatch.setattr(client_mod, "os", _Os)


def drop_count(n: int, fraction: float) -> int:
    return math.ceil(fraction * n)
