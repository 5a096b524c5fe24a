"""Multi-release SecAgg+: one authenticated key set-up and one Shamir sharing per session, then cheap releases.

A plain SecAgg+ round (``client``/``server``) pays for X25519 key pairs, signed
advertisements, a Shamir sharing, share encryption and signed survivor lists every
time it sums one vector. A *session* pays for the keys and the sharing once for up to
``releases`` sums ("releases") among the same peers, so that a release costs masking
and unmasking only. The host side is ``session_server``; this module is the peer's
side and the set-up messages.

Set-up (once per session, numbered ``session_round``: strictly increasing per peer, so
a replayed set-up is refused):

1. every peer makes an encryption key pair ``c_u``, one mask key pair ``s_u`` and, for
   each release ``r`` of the session, an independent 32-byte self-mask seed ``b_u^r``
   (all from the OS CSPRNG); it signs both public keys and the digest of the ``R``
   seed commitments under its long-term identity (``keys.advertise_transcript``);
2. it checks its neighbours' signatures, Shamir-shares its ``R`` self-mask seeds among
   them in one ``shamir.split`` and sends each neighbour one AES-GCM ciphertext;
3. it opens the ciphertexts addressed to it, keeps the shares (``accept``), computes
   one X25519 agreement ``k_uv`` with each neighbour and erases ``s_u``.

Release ``r`` (``purpose`` picks the encoding and noise configuration, e.g. a tree
level or the leaves): the peer masks its vector with ``PRG(b_u^r)`` and the pairwise
masks ``+-PRG(s_uv^r)``, ``s_uv^r = HKDF(k_uv, info = session scope || r || u || v)``
(`pair_seed`: ``keys.mask_seed`` with the session scope as session id and ``r`` as
round id), erases ``b_u^r``, vouches for the survivor and dropout lists the host gives
it, and reveals, per surviving neighbour ``v``, its share of ``b_v^r`` and, per dropped
neighbour ``v``, the pairwise seed ``s_uv^r`` itself. The host's state machine for a
release is the plain server's (``session_server``), so every check of a plain round
applies, except that a dropped peer's pairwise masks are removed with the revealed
seeds instead of a reconstructed key.

Why a dropped peer's mask key is never reconstructed. The host rebuilds every
survivor's self-mask seed in every release. Were ``s_v`` rebuilt once (``v`` dropped in
release r), the host would hold ``v``'s pairwise seeds of *every* release of the
session, and with the self-mask seeds it already rebuilt, ``v``'s own vectors of all
the releases ``v`` survived: the rule "a dropped peer never contributes again" would
not save the earlier ones. Revealing ``s_uv^r`` instead uncovers release ``r``'s
pairwise masks only: HKDF with the release in its info makes the seeds of other
releases independent of it. The price: every surviving neighbour of a dropped peer
must answer the unmask stage (a share of ``s_v`` would have needed any ``t``), else the
release aborts; and the host cannot check a revealed seed against a public key, so a
bank that reveals a wrong one leaves masks that do not cancel, which the decoder's
range check refuses (no sum is released; a malicious bank could as well send a bad
vector).

The consistency check without signatures. In a plain round the survivors sign the
lists with their long-term Ed25519 keys and each checks ``t`` signatures: about 70
signature checks per release among 10 peers, the largest cost left once keys are
set up. In a session the pairs already share an authenticated secret, the X25519
agreement of their encryption keys (signed at set-up), so each survivor instead sends,
for each surviving neighbour ``v``, ``HMAC(K_uv, u || v || H(scope, r, lists))`` with
``K_uv = HKDF(agreement, scope, u, v)``; a peer unmasks only when at least ``t``
survivors (itself included) sent it a valid MAC on the very lists it vouched for. Only
``u`` and ``v`` can compute ``K_uv``, so the host can neither forge a MAC nor move one to
other lists; what is lost against signatures is transferability (a MAC convinces its
recipient, not a third party), which the check does not need.

Safety conditions, enforced here (and mirrored by the host, ``session_server``):

* **A release index is used once.** Releases run in increasing order, at most
  ``releases`` per session; a request for an index not above the last one is refused
  (replay), and the self-mask seeds of every index up to the one masked are erased,
  whether used or skipped. A peer therefore never masks twice with the same seeds.
* **Never both secrets of one peer in one release.** The survivor and dropout lists
  of release ``r`` must partition exactly the peers the release was announced to;
  a peer reveals a share of ``b_v^r`` only for a listed survivor and ``s_uv^r`` only for
  a listed dropout, once per release (unmasking ends the release; a second request,
  or a peer that refused once, is refused), and only with ``threshold`` survivors' MACs
  on the very lists it vouched for, so the host cannot tell two groups two stories.
  Since ``t`` is a majority of the holders plus the colluders, no two disjoint honest
  groups can be told different stories about ``v`` and both reach ``t``.
* **A dropped peer never contributes again in the session.** Once a peer has vouched
  for a list naming ``v`` dropped in release ``r`` (its ``s_uv^r`` may then be
  revealed), it refuses any later release that includes ``v``: it will not mask with
  ``v`` nor vouch for or unmask a list with ``v`` among the survivors. With per-release
  seeds this is defence in depth (``s_uv^r`` opens no other release); it also keeps the
  session's members a shrinking set, so the dropout bookkeeping below holds.
* **Threshold and dropouts across releases.** The graph, threshold ``t`` and required
  survivors are fixed at set-up for the session's ``n`` peers. A peer refuses a
  release (and a survivor list) in which fewer than ``t`` holders of its shares take
  part or fewer than the required survivors remain. Since dropped peers never return,
  the dropouts of a session accumulate: once more than ``n - required`` are gone every
  release aborts before anything is unmasked, and the caller opens a new session
  (fresh keys, everyone back). The distributed-noise shares are sized for ``D + C``
  missing peers of ``n``, and ``required >= n - D`` keeps every release within that.

What the host learns: the public keys and commitments of the session; per release,
the sum over that release's survivors, who survived and who dropped, and for a dropped
``v`` its pairwise seeds of that release with its surviving neighbours, which hide
nothing the host ever sees added to a sum. No seed of one release tells it anything
about another.

Cost of a release at a peer: one noise share, one ChaCha20 self mask, one HKDF and
one ChaCha20 pairwise mask per neighbour, one HMAC per neighbour to send and one per
neighbour to check; no key agreement, no Shamir sharing, no signature.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsilo.errors import DataError, ProtocolError

from . import keys as K
from . import shamir
from .auth import Signer, Verifier
from .config import SecAggConfig
from .encoding import FixedPointEncoder
from .graph import Graph
from .messages import EncryptedShares, MaskedInput, SurvivorSignature, UnmaskShares
from .noise import sample_discrete_gaussian
from .prg import LABEL_PAIR_MASK, LABEL_SELF_MASK, add_mask

__all__ = [
    "MAX_RELEASES",
    "SessionSetup",
    "SessionKeys",
    "ReleaseRequest",
    "SessionClient",
    "session_scope",
    "keys_transcript",
    "check_configs",
]

MAX_RELEASES = 4096
_SCOPE = b"\x00fedsilo/secagg/multi-release/v1\x00"
_MAC_LABEL = b"fedsilo/secagg/multi-release/v1/survivors-mac|"


def session_scope(session_id: bytes, session_round: int) -> bytes:
    """The session id under which a session's keys, seeds and lists are derived and signed.

    ``keys``' context binds it with a length prefix; the leading zero byte and label keep it
    apart from any plain round's session id (a job id), so nothing signed or derived in a
    session can be replayed as a plain round's, or the other way round.
    """
    if not isinstance(session_round, int) or not 0 <= session_round < 1 << 64:
        raise ProtocolError(f"session round must be an integer in [0, 2**64), got {session_round!r}")
    return _SCOPE + len(session_id).to_bytes(2, "big") + session_id + session_round.to_bytes(8, "big")


def check_configs(configs: Mapping[str, SecAggConfig]) -> SecAggConfig:
    """The configuration that fixes the session's graph, threshold and session id: all purposes must agree on it."""
    if not configs:
        raise ProtocolError("a session needs at least one purpose and its SecAgg+ configuration")
    fields = (
        "dropout_fraction",
        "collusion_fraction",
        "security_bits",
        "correctness_bits",
        "complete_graph_max",
        "min_survivors",
        "session_id",
    )
    first = next(iter(configs.values()))
    for purpose, config in configs.items():
        if not isinstance(config, SecAggConfig):
            raise ProtocolError(f"purpose {purpose!r}: a SecAggConfig is needed")
        differ = [f for f in fields if getattr(config, f) != getattr(first, f)]
        if differ:
            raise ProtocolError(f"purpose {purpose!r} differs from the session's graph settings in {differ}")
    return first


def _digest(items: Sequence[bytes]) -> bytes:
    return hashlib.sha256(b"".join(len(x).to_bytes(2, "big") + x for x in items)).digest()


def keys_transcript(scope: bytes, session_round: int, keys: SessionKeys) -> bytes:
    """What a peer signs at set-up: its two public keys and the digest of its per-release seed commitments."""
    return K.advertise_transcript(
        session=scope,
        round_id=session_round,
        node_id=keys.node_id,
        enc_public_key=keys.enc_public_key,
        mask_public_key=keys.mask_public_key,
        seed_commitment=_digest(keys.seed_commitments),
        credential=keys.credential,
    )


@dataclass(frozen=True)
class SessionSetup:
    """Public parameters of a session: its number, peers, graph seed and number of releases."""

    session_round: int
    participants: tuple[int, ...]
    round_seed: bytes
    releases: int


@dataclass(frozen=True)
class SessionKeys:
    """Set-up answer: an encryption and a mask public key and, per release, a seed commitment, signed."""

    session_round: int
    node_id: int
    enc_public_key: bytes
    mask_public_key: bytes
    seed_commitments: tuple[bytes, ...]
    signature: bytes = b""
    credential: bytes = b""


@dataclass(frozen=True)
class ReleaseRequest:
    """The host's request for release ``release`` of session ``session_round`` among ``participants``."""

    session_round: int
    release: int
    purpose: str
    participants: tuple[int, ...]


@dataclass
class _Release:
    release: int
    pairs: frozenset[int]  # the neighbours this peer masked with (all hold its shares)
    participants: frozenset[int]
    checked: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    done: bool = False


@dataclass
class _Session:
    session_round: int
    scope: bytes
    participants: frozenset[int]
    releases: int
    graph: Graph
    enc_key: X25519PrivateKey
    mask_key: X25519PrivateKey | None
    seeds: list[bytes | None]
    own_name: str = ""
    peer_keys: dict[int, SessionKeys] = field(default_factory=dict)
    own_shares: list[int] = field(default_factory=list)  # per release: my share of my b^r
    partners: dict[int, list[int]] = field(default_factory=dict)  # v -> per release: my share of b_v^r
    agreements: dict[int, bytes] = field(default_factory=dict)  # v -> X25519(s_u, s_v), never revealed
    accepted: bool = False
    gone: dict[int, int] = field(default_factory=dict)  # peer -> the release in which I signed it dropped
    last_release: int = 0
    current: _Release | None = None
    encoders: dict[str, FixedPointEncoder] = field(default_factory=dict)  # per purpose, for the session's n peers
    mac_keys: dict[int, bytes] = field(default_factory=dict)  # v -> key of the survivor-list MACs between us
    round_seed: bytes = b""  # the graph's public seed (kept to resume the session in another process)


class SessionClient:
    """One peer's side of multi-release SecAgg+ sessions (see the module docstring).

    ``configs`` maps each release purpose to its SecAgg+ configuration (encoding and
    noise); they must agree on the graph settings and session id (`check_configs`).
    ``signer`` and ``verifier`` are given together or not at all, as for `SecAggClient`.
    """

    def __init__(
        self,
        node_id: int,
        configs: Mapping[str, SecAggConfig],
        *,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        if not isinstance(node_id, int) or not 0 <= node_id < 1 << 64:
            raise ProtocolError(f"node id must be an integer in [0, 2**64), got {node_id!r}")
        if (signer is None) != (verifier is None):
            raise ProtocolError(f"peer {node_id}: a signer and a verifier are given together or not at all")
        self.node_id = node_id
        self.configs = dict(configs)
        self.base = check_configs(self.configs)
        self._signer = signer
        self._verifier = verifier
        self._session: _Session | None = None
        self._last_session: int | None = None

    # ------------------------------------------------------------------ helpers
    def _fail(self, message: str) -> ProtocolError:
        """End the session for this peer (every secret erased) and return the error to raise."""
        st = self._session
        if st is not None:
            st.mask_key = None
            st.agreements = {}
            st.seeds = [None] * st.releases
            st.partners = {}
            st.own_shares = []
            st.last_release = st.releases
            st.current = None  # nothing more is answered in this session
        where = "" if st is None else f", session {st.session_round}"
        return ProtocolError(f"peer {self.node_id}{where}: {message}; the session is over for this peer")

    # ------------------------------------------------------------------ state between processes
    def state_dict(self) -> dict:
        """The peer's session state as JSON-ready values (bytes as hex), to resume in another process.

        It holds the session's private keys, seeds, shares and pairwise agreements: keep it
        where the peer keeps its own secrets (Flower's node-local ``context.state``, which a
        deployed ClientApp process receives and returns for each message), never in a message.
        The configurations, signer and verifier are not in it: the resuming peer passes its own.
        """
        st = self._session
        state: dict = {"node_id": self.node_id, "last_session": self._last_session, "session": None}
        if st is None:
            return state
        hexa = lambda b: None if b is None else b.hex()  # noqa: E731
        cur = st.current
        state["session"] = {
            "session_round": st.session_round,
            "participants": sorted(st.participants),
            "round_seed": st.round_seed.hex(),
            "releases": st.releases,
            "enc_key": K.private_bytes(st.enc_key).hex(),
            "mask_key": None if st.mask_key is None else K.private_bytes(st.mask_key).hex(),
            "seeds": [hexa(b) for b in st.seeds],
            "own_name": st.own_name,
            "peer_keys": {
                str(v): {
                    "enc": k.enc_public_key.hex(),
                    "mask": k.mask_public_key.hex(),
                    "commitments": [c.hex() for c in k.seed_commitments],
                    "signature": k.signature.hex(),
                    "credential": k.credential.hex(),
                }
                for v, k in st.peer_keys.items()
            },
            "own_shares": [hex(x) for x in st.own_shares],
            "partners": {str(v): [hex(x) for x in row] for v, row in st.partners.items()},
            "agreements": {str(v): a.hex() for v, a in st.agreements.items()},
            "accepted": st.accepted,
            "gone": {str(v): r for v, r in st.gone.items()},
            "last_release": st.last_release,
            "mac_keys": {str(v): k.hex() for v, k in st.mac_keys.items()},
            "current": None
            if cur is None
            else {
                "release": cur.release,
                "pairs": sorted(cur.pairs),
                "participants": sorted(cur.participants),
                "checked": None if cur.checked is None else [list(cur.checked[0]), list(cur.checked[1])],
                "done": cur.done,
            },
        }
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Resume from `state_dict`'s output (this peer's own, from its node-local state).

        Raises ProtocolError when the state is another node's or malformed; the graph and
        the encoders are recomputed from the participants, the seed and this peer's configurations.
        """
        try:
            if state["node_id"] != self.node_id:
                raise ProtocolError(f"peer {self.node_id}: the saved session state is node {state['node_id']}'s")
            last = state["last_session"]
            self._last_session = None if last is None else int(last)
            raw = state["session"]
            if raw is None:
                self._session = None
                return
            unhex = lambda h: None if h is None else bytes.fromhex(h)  # noqa: E731
            parts = frozenset(int(v) for v in raw["participants"])
            r = int(raw["session_round"])
            seed = bytes.fromhex(raw["round_seed"])
            st = _Session(
                r,
                session_scope(self.base.session_id, r),
                parts,
                int(raw["releases"]),
                self.base.graph(parts, seed),
                K.load_private(bytes.fromhex(raw["enc_key"])),
                None if raw["mask_key"] is None else K.load_private(bytes.fromhex(raw["mask_key"])),
                [unhex(b) for b in raw["seeds"]],
                own_name=str(raw["own_name"]),
                round_seed=seed,
            )
            st.peer_keys = {
                int(v): SessionKeys(
                    r,
                    int(v),
                    bytes.fromhex(k["enc"]),
                    bytes.fromhex(k["mask"]),
                    tuple(bytes.fromhex(c) for c in k["commitments"]),
                    bytes.fromhex(k["signature"]),
                    bytes.fromhex(k["credential"]),
                )
                for v, k in raw["peer_keys"].items()
            }
            st.own_shares = [int(x, 16) for x in raw["own_shares"]]
            st.partners = {int(v): [int(x, 16) for x in row] for v, row in raw["partners"].items()}
            st.agreements = {int(v): bytes.fromhex(a) for v, a in raw["agreements"].items()}
            st.accepted = bool(raw["accepted"])
            st.gone = {int(v): int(x) for v, x in raw["gone"].items()}
            st.last_release = int(raw["last_release"])
            st.mac_keys = {int(v): bytes.fromhex(k) for v, k in raw["mac_keys"].items()}
            cur = raw["current"]
            if cur is not None:
                checked = cur["checked"]
                st.current = _Release(
                    int(cur["release"]),
                    frozenset(int(v) for v in cur["pairs"]),
                    frozenset(int(v) for v in cur["participants"]),
                    None if checked is None else (tuple(map(int, checked[0])), tuple(map(int, checked[1]))),
                    bool(cur["done"]),
                )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"peer {self.node_id}: malformed saved session state ({exc})") from None
        st.encoders = {p: c.encoder(len(parts)) for p, c in self.configs.items()}
        self._session = st

    def _current(self, session_round: int | None = None) -> _Session:
        st = self._session
        if st is None or (session_round is not None and st.session_round != session_round):
            raise ProtocolError(
                f"peer {self.node_id}: request for session {session_round}, but the current session is "
                f"{None if st is None else st.session_round}; refused"
            )
        return st

    @property
    def gone(self) -> dict[int, int]:
        """Peers this peer signed as dropped in the current session, with the release (never again this session)."""
        return dict(self._session.gone) if self._session else {}

    # ------------------------------------------------------------------ set-up 1
    def keys(self, setup: SessionSetup) -> SessionKeys:
        """Open a session: fresh keys and seeds for every release, the public parts signed."""
        r, n_rel = setup.session_round, setup.releases
        if not isinstance(r, int) or not 0 <= r < 1 << 64:
            raise ProtocolError(f"peer {self.node_id}: session round must be an integer in [0, 2**64)")
        if self._last_session is not None and r <= self._last_session:
            raise ProtocolError(
                f"peer {self.node_id}: session {r} is not newer than session {self._last_session}; "
                f"refusing to open it again (replay?)"
            )
        if not isinstance(n_rel, int) or not 1 <= n_rel <= MAX_RELEASES:
            raise ProtocolError(f"peer {self.node_id}: a session has 1 to {MAX_RELEASES} releases, got {n_rel!r}")
        parts = frozenset(setup.participants)
        if self.node_id not in parts:
            raise ProtocolError(f"peer {self.node_id}: not among the participants of session {r}")
        scope = session_scope(self.base.session_id, r)
        enc_key = K.generate_key()
        mask_key = K.generate_key()
        seeds: list[bytes | None] = [os.urandom(32) for _ in range(n_rel)]
        commitments = tuple(
            K.seed_commitment(b, session=scope, round_id=i + 1, node_id=self.node_id)
            for i, b in enumerate(seeds)
            if b is not None
        )
        public = K.public_bytes(mask_key)
        msg = SessionKeys(r, self.node_id, K.public_bytes(enc_key), public, commitments)
        own_name = ""
        if self._signer is not None and self._verifier is not None:
            credential = self._signer.credential
            msg = SessionKeys(r, self.node_id, msg.enc_public_key, public, commitments, b"", credential)
            transcript = keys_transcript(scope, r, msg)
            signature = self._signer.sign(transcript)
            try:
                own_name = self._verifier.verify(credential, signature, transcript)
            except ValueError as exc:
                raise ProtocolError(f"peer {self.node_id}: my own identity is not admitted ({exc})") from None
            msg = SessionKeys(r, self.node_id, msg.enc_public_key, public, commitments, signature, credential)
        self._last_session = r
        graph = self.base.graph(parts, setup.round_seed)
        self._session = _Session(
            r, scope, parts, n_rel, graph, enc_key, mask_key, seeds, own_name=own_name, round_seed=setup.round_seed
        )
        self._session.encoders = {p: c.encoder(len(parts)) for p, c in self.configs.items()}
        return msg

    # ------------------------------------------------------------------ set-up 2
    def share(self, session_round: int, peer_keys: Mapping[int, SessionKeys]) -> dict[int, EncryptedShares]:
        """Check the neighbours' signed keys, Shamir-share every release's two secrets, encrypt per neighbour."""
        st = self._current(session_round)
        if st.peer_keys or st.accepted or st.last_release:
            raise self._fail("share request out of order or replayed")
        me, neighbours = self.node_id, st.graph.neighbours[self.node_id]
        if st.mask_key is None:
            raise self._fail("share request after the session's keys were erased")
        own = {K.public_bytes(st.enc_key), K.public_bytes(st.mask_key)}
        seen: set[bytes] = set()
        names: dict[int, str] = {}
        for v, msg in peer_keys.items():
            if v not in neighbours:
                raise self._fail(f"the host sent keys of peer {v}, which is not my neighbour in this session's graph")
            if not isinstance(msg, SessionKeys) or msg.node_id != v or msg.session_round != session_round:
                raise self._fail(f"keys relayed for peer {v} are malformed or belong to another peer or session")
            if len(msg.seed_commitments) != st.releases:
                raise self._fail(f"peer {v} advertised commitments for a number of releases other than {st.releases}")
            for raw in (msg.enc_public_key, msg.mask_public_key):
                try:
                    K.check_public_key(raw, probe=False)
                except ValueError as exc:
                    raise self._fail(f"peer {v} advertised an invalid X25519 key ({exc})") from None
                if raw in own or raw in seen:
                    raise self._fail(f"peer {v} advertised a key that is mine or another's (reflection)")
                seen.add(raw)
            if self._verifier is not None:
                try:
                    name = self._verifier.verify(
                        msg.credential, msg.signature, keys_transcript(st.scope, st.session_round, msg)
                    )
                except (ValueError, TypeError) as exc:
                    raise self._fail(
                        f"the keys of peer {v} carry an invalid signature ({exc}): the host substituted or altered "
                        f"them; nothing shared"
                    ) from None
                if name == st.own_name or name in names.values():
                    raise self._fail(f"the keys of peer {v} are signed by {name!r}, who signs as another peer")
                names[v] = name
        t = st.graph.threshold
        if len(peer_keys) + 1 < t:
            raise self._fail(f"only {len(peer_keys)} neighbours remain: my secrets would be below the threshold {t}")
        holders = sorted(peer_keys) + [me]
        secrets = [int.from_bytes(b, "big") for b in st.seeds if b is not None]
        shares = shamir.split(secrets, [shamir.point_of(v) for v in holders], t)
        out: dict[int, EncryptedShares] = {}
        for v, row in zip(holders, shares, strict=True):
            if v == me:
                st.own_shares = list(row)
                continue
            key, aad = self._share_key(st, me, v, peer_keys[v].enc_public_key)
            nonce, ct = K.encrypt(key, b"".join(shamir.share_to_bytes(x) for x in row), aad)
            out[v] = EncryptedShares(session_round, me, v, nonce, ct)
        st.peer_keys = dict(peer_keys)
        return out

    def _share_key(self, st: _Session, src: int, dst: int, peer_enc_public: bytes) -> tuple[bytes, bytes]:
        try:
            secret = K.shared_secret(st.enc_key, peer_enc_public)
        except ValueError:
            raise self._fail(f"peer {dst if src == self.node_id else src} advertised a low-order key") from None
        peer = dst if src == self.node_id else src
        if peer not in st.mac_keys:
            st.mac_keys[peer] = survivors_mac_key(secret, st.scope, self.node_id, peer)
        key = K.share_key(secret, session=st.scope, round_id=st.session_round, src=src, dst=dst)
        return key, K.share_aad(session=st.scope, round_id=st.session_round, src=src, dst=dst)

    # ------------------------------------------------------------------ set-up 3
    def accept(self, session_round: int, received: Mapping[int, EncryptedShares]) -> dict[int, str]:
        """Open the shares addressed to me; returns the peers whose shares failed (the host must exclude them)."""
        st = self._current(session_round)
        if not st.peer_keys or st.accepted:
            raise self._fail("accept request out of order or replayed")
        size = st.releases * shamir.SHARE_BYTES
        rejected: dict[int, str] = {}
        for src in sorted(received):
            if src not in st.peer_keys:
                raise self._fail(f"the host forwarded shares from peer {src}, to whom I sent none")
            msg = received[src]
            try:
                if not isinstance(msg, EncryptedShares) or (msg.src, msg.dst, msg.round_id) != (
                    src,
                    self.node_id,
                    session_round,
                ):
                    raise ValueError("addressed to another peer, from another peer or for another session")
                key, aad = self._share_key(st, src, self.node_id, st.peer_keys[src].enc_public_key)
                plain = K.decrypt(key, msg.nonce, msg.ciphertext, aad)
                if len(plain) != size:
                    raise ValueError("decrypted shares have the wrong length")
                values = [
                    shamir.share_from_bytes(plain[i : i + shamir.SHARE_BYTES])
                    for i in range(0, size, shamir.SHARE_BYTES)
                ]
            except ValueError as exc:
                rejected[src] = f"shares from peer {src} rejected: {exc}"
                continue
            st.partners[src] = values
        t = st.graph.threshold
        if len(st.partners) + 1 < t:
            raise self._fail(f"only {len(st.partners)} valid shares received, below the threshold {t}")
        assert st.mask_key is not None
        for v in st.partners:  # one agreement per pair and session; every release's pairwise seed comes from it
            try:
                st.agreements[v] = K.shared_secret(st.mask_key, st.peer_keys[v].mask_public_key)
            except ValueError:
                raise self._fail(f"peer {v} advertised a low-order mask key") from None
        st.mask_key = None
        st.accepted = True
        return rejected

    # ------------------------------------------------------------------ release: mask
    def expect_release(self, request: ReleaseRequest) -> None:
        """Raise ProtocolError unless ``request`` may be answered now (lets the caller refuse before computing)."""
        st = self._current(request.session_round)
        r = request.release
        if not st.accepted:
            raise ProtocolError(f"peer {self.node_id}: release {r} requested before the session's set-up finished")
        if not isinstance(r, int) or isinstance(r, bool) or not st.last_release < r <= st.releases:
            raise ProtocolError(
                f"peer {self.node_id}, session {st.session_round}: release {r!r} refused: releases run in "
                f"increasing order from {st.last_release + 1} to {st.releases} and each index is used once (replay?)"
            )
        if request.purpose not in self.configs:
            raise ProtocolError(f"peer {self.node_id}: unknown release purpose {request.purpose!r}")

    def mask(self, request: ReleaseRequest, vector: np.ndarray, weight: float = 1.0) -> MaskedInput:
        """Encode and mask ``vector`` for release ``request.release`` (see the module docstring)."""
        self.expect_release(request)
        st = self._current(request.session_round)
        r, me = request.release, self.node_id
        parts = frozenset(request.participants)
        # whatever happens next, no index up to r is ever used again
        seed = st.seeds[r - 1]
        for i in range(st.last_release, r):
            st.seeds[i] = None
        st.last_release = r
        st.current = None
        if len(parts) != len(request.participants) or me not in parts or not parts <= st.participants:
            raise self._fail(f"release {r} lists peers twice, peers outside the session, or not me")
        back = sorted(parts & set(st.gone))
        if back:
            raise self._fail(
                f"release {r} includes peer(s) {back}, which I signed as dropped earlier in this session: their "
                f"pairwise seeds of that release may have been revealed, so they never take part again"
            )
        pairs = st.graph.neighbours[me] & parts
        unknown = sorted(pairs - set(st.partners))
        if unknown:
            raise self._fail(f"release {r} includes neighbour(s) {unknown}, from whom I hold no valid shares")
        t = st.graph.threshold
        if len(pairs) + 1 < t:
            raise self._fail(f"only {len(pairs) + 1} holders of my release-{r} secrets take part, threshold {t}")
        config = self.configs[request.purpose]
        max_w = float(config.max_weight)
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and 0 <= weight <= max_w):
            raise DataError(f"peer {me}: weight must lie in [0, max_weight={max_w}], got {weight!r}")
        assert seed is not None
        encoder = st.encoders[request.purpose]
        y = encoder.encode(vector, float(weight) / max_w)
        if config.noise is not None:
            noise = sample_discrete_gaussian(config.noise.peer_sigma(encoder.scale), y.shape[0] - 1)
            np.add(y[:-1], noise.view(np.uint64), out=y[:-1])
        add_mask(y, seed, LABEL_SELF_MASK)
        for v in sorted(pairs):
            add_mask(y, pair_seed(st.agreements[v], st.scope, r, me, v), LABEL_PAIR_MASK, subtract=v < me)
        y &= encoder.mask
        st.current = _Release(r, frozenset(pairs), parts)
        return MaskedInput(r, me, y, {})

    # ------------------------------------------------------------------ release: consistency check
    def sign(
        self, session_round: int, release: int, survivors: Sequence[int], dropped: Sequence[int]
    ) -> SurvivorSignature:
        """Check the release's survivor and dropout lists, remember the dropouts for the session, sign."""
        st = self._current(session_round)
        cur = st.current
        if cur is None or cur.release != release or cur.checked is not None:
            raise ProtocolError(
                f"peer {self.node_id}, session {session_round}: survivor list for release {release} refused "
                f"(not the release I masked last, or already signed: replay?)"
            )
        alive, lost = frozenset(survivors), frozenset(dropped)
        if len(alive) != len(survivors) or len(lost) != len(dropped):
            raise self._fail(f"the survivor lists of release {release} name a peer twice")
        if alive & lost or alive | lost != cur.participants:
            raise self._fail(
                f"the survivor and dropout lists of release {release} do not split exactly the peers the release "
                f"was announced to; refusing to reveal anything"
            )
        if self.node_id not in alive:
            raise self._fail(f"the host lists me as dropped in release {release} although I masked")
        need = self.base.required_survivors(st.graph)
        if len(alive) < need:
            raise self._fail(f"only {len(alive)} survivors in release {release}, {need} required")
        holders = 1 + len(cur.pairs & alive)
        if holders < st.graph.threshold:
            raise self._fail(f"only {holders} holders of my secrets survive, threshold {st.graph.threshold}")
        for v in lost:  # from now on, v never takes part in this session again
            st.gone.setdefault(v, release)
        cur.checked = (tuple(sorted(alive)), tuple(sorted(lost)))
        macs = b""
        if self._verifier is not None:  # authenticated: one MAC per surviving neighbour on the lists
            digest = _lists_digest(st.scope, release, *cur.checked)
            macs = b"".join(_u64(v) + _mac(st.mac_keys[v], self.node_id, v, digest) for v in sorted(cur.pairs & alive))
        return SurvivorSignature(release, self.node_id, b"", macs)

    # ------------------------------------------------------------------ release: unmask
    def unmask(
        self,
        session_round: int,
        release: int,
        survivors: Sequence[int],
        dropped: Sequence[int],
        signatures: Mapping[int, SurvivorSignature] | None = None,
    ) -> UnmaskShares:
        """Reveal shares of ``b_v^r`` for survivors and the seeds ``s_uv^r`` for dropouts, once, for the lists I vouched for."""
        st = self._current(session_round)
        cur = st.current
        if cur is None or cur.release != release or cur.checked is None or cur.done:
            raise ProtocolError(
                f"peer {self.node_id}, session {session_round}: unmask request for release {release} refused "
                f"(not signed, another release, or already answered: replay?)"
            )
        if (tuple(sorted(survivors)), tuple(sorted(dropped))) != cur.checked or len(set(survivors)) != len(survivors):
            raise self._fail(f"the unmask request of release {release} carries lists other than those I signed")
        if self._verifier is not None:
            self._check_vouchers(st, cur, signatures or {})
        alive, lost = set(survivors), set(dropped)
        back = sorted(alive & set(st.gone))
        if back:  # unreachable through `mask`/`sign`, kept as the rule's last line
            raise self._fail(f"survivors {back} were dropped earlier in this session; refusing their seeds")
        i = release - 1
        seeds = {v: shamir.share_to_bytes(st.partners[v][i]) for v in cur.pairs & alive}
        seeds[self.node_id] = shamir.share_to_bytes(st.own_shares[i])
        # for a dropped neighbour: our pairwise seed of this release itself (not a share), in the share's 66 bytes
        keys_ = {
            v: shamir.share_to_bytes(
                int.from_bytes(pair_seed(st.agreements[v], st.scope, release, self.node_id, v), "big")
            )
            for v in cur.pairs & lost
        }
        for v in st.partners:  # this release's shares are spent
            st.partners[v][i] = 0
        st.own_shares[i] = 0
        cur.done = True
        return UnmaskShares(release, self.node_id, seeds, keys_)

    def _check_vouchers(self, st: _Session, cur: _Release, signatures: Mapping[int, SurvivorSignature]) -> None:
        """At least ``t`` survivors (me included) vouched, each with the MAC only it and I can make, for my lists."""
        assert cur.checked is not None
        digest = _lists_digest(st.scope, cur.release, *cur.checked)
        vouched = {self.node_id}
        for w in sorted(signatures):
            sig = signatures[w]
            if w == self.node_id or w not in cur.pairs:
                continue  # my own, or a survivor with whom I share no key: it cannot vouch to me
            if w not in cur.checked[0] or not isinstance(sig, SurvivorSignature) or sig.node_id != w:
                raise self._fail(f"the unmask request carries a malformed survivor-list MAC or one of non-survivor {w}")
            macs = _parse_macs(sig.signature)
            if macs is None or not hmac.compare_digest(
                macs.get(self.node_id, b""), _mac(st.mac_keys[w], w, self.node_id, digest)
            ):
                raise self._fail(
                    f"peer {w}'s MAC is not on the survivor lists I signed: the host told peers different stories "
                    f"or altered a message; refusing to unmask"
                )
            vouched.add(w)
        t = st.graph.threshold
        if len(vouched) < t:
            raise self._fail(
                f"only {len(vouched)} survivors vouch for the lists of release {cur.release}, threshold {t}; "
                f"refusing to unmask"
            )


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def survivors_mac_key(secret: bytes, scope: bytes, u: int, v: int) -> bytes:
    """The key of the survivor-list MACs between u and v: HKDF of their encryption-key agreement (symmetric)."""
    lo, hi = sorted((u, v))
    info = _MAC_LABEL + len(scope).to_bytes(2, "big") + scope + _u64(lo) + _u64(hi)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_MAC_LABEL, info=info).derive(secret)


def pair_seed(agreement: bytes, scope: bytes, release: int, u: int, v: int) -> bytes:
    """The pairwise mask seed of u and v in one release: HKDF(info = session scope || release || u || v)."""
    return K.mask_seed(agreement, session=scope, round_id=release, u=u, v=v)


def _lists_digest(scope: bytes, release: int, survivors: Sequence[int], dropped: Sequence[int]) -> bytes:
    """SHA-256 of the release's survivor and dropout lists, bound to the session scope and release."""
    return hashlib.sha256(
        K.survivors_transcript(session=scope, round_id=release, node_id=0, survivors=survivors, dropped=dropped)
    ).digest()


def _mac(key: bytes, src: int, dst: int, digest: bytes) -> bytes:
    return hmac.digest(key, b"survivors|" + _u64(src) + _u64(dst) + digest, "sha256")


def _parse_macs(raw: object) -> dict[int, bytes] | None:
    """``node id (8 bytes) || MAC (32 bytes)`` records -> {node: MAC}; None when malformed."""
    if not isinstance(raw, bytes) or len(raw) % 40:
        return None
    return {int.from_bytes(raw[i : i + 8], "big"): raw[i + 8 : i + 40] for i in range(0, len(raw), 40)}
