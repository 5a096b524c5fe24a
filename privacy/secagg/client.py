"""The client side of SecAgg+ as a state machine: one method per stage, no network.

Stages of a round (each method refuses to run out of order, twice, or for another round)::

    advertise_keys -> share_keys -> mask_input -> sign_survivors -> unmask

Authentication (the actively secure variant of Bonawitz et al., CCS 2017). With a
``signer`` and a ``verifier`` (see ``auth``) a peer signs its advertised keys, bound to
the session (job), round and its node id, and verifies every neighbour's signature
before it encrypts a share or derives a mask, so a server that substitutes a key is
refused, the peer named. Before unmasking, each survivor signs the survivor and
dropout lists it was given (``sign_survivors``); ``unmask`` reveals nothing unless the
request carries valid signatures on the very same lists from at least ``threshold``
distinct survivors, so a server that tells different peers different dropout stories
is caught before any share leaves. Without them (library tests, audits) nothing is
signed and the relay is trusted with the keys.

The client refuses (raises ProtocolError, and the round is over for it) when the
server asks for something inconsistent: keys of a peer that is not its neighbour,
reflected or badly signed keys, too few peers to stay above the threshold, a peer
listed both as survivor and as dropped, or anything that would reveal both ``b_v``
and ``s_v`` of one peer. Shares from a peer that fail AEAD authentication are not
an abort: the client masks without that peer and reports it in ``MaskedInput.rejected``.

Every key, share encryption, commitment and mask comes from ``config.suite``'s crypto
suite (see ``keys``); the round's private keys are held as the suite's 32-byte private keys.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedsilo.errors import DataError, ProtocolError

from . import keys as K
from . import shamir
from .auth import Signer, Verifier
from .config import SecAggConfig
from .encoding import FixedPointEncoder
from .graph import Graph
from .messages import AdvertiseKeys, EncryptedShares, MaskedInput, SurvivorSignature, UnmaskShares
from .noise import sample_discrete_gaussian
from .prg import LABEL_PAIR_MASK, LABEL_SELF_MASK, add_mask

__all__ = ["SecAggClient", "ClientStage"]

_PLAINTEXT_BYTES = 2 * shamir.SHARE_BYTES
_BYTES_FIELDS = ("enc_public_key", "mask_public_key", "seed_commitment", "signature", "credential")


class ClientStage(enum.Enum):
    IDLE = "idle"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    CHECKED = "checked"
    DONE = "done"
    ABORTED = "aborted"


@dataclass
class _Round:
    round_id: int
    participants: frozenset[int]
    round_seed: bytes
    graph: Graph
    encoder: FixedPointEncoder
    enc_key: bytes  # the suite's agreement private keys
    mask_key: bytes | None
    seed: bytes | None
    stage: ClientStage = ClientStage.ADVERTISED
    peer_keys: dict[int, AdvertiseKeys] = field(default_factory=dict)
    own_share: tuple[int, int] = (0, 0)
    partners: dict[int, tuple[int, int]] = field(default_factory=dict)  # v -> (share b_v, share s_v)
    rejected: dict[int, str] = field(default_factory=dict)
    own_name: str = ""
    peer_names: dict[int, str] = field(default_factory=dict)  # v -> identity that signed v's keys
    checked: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # the lists this peer signed

    def secrets(self) -> tuple[bytes, bytes]:
        """The mask key and the self-mask seed, until the masked input erases them."""
        if self.mask_key is None or self.seed is None:
            raise ProtocolError(f"round {self.round_id}: the mask key and seed are already erased; refused")
        return self.mask_key, self.seed


class SecAggClient:
    """One peer's SecAgg+ state for successive rounds.

    ``signer`` (this peer's identity) and ``verifier`` (the admitted identities) are
    given together or not at all: with them, keys and survivor lists are signed and
    checked (see the module docstring); without them keys are taken as relayed.
    """

    def __init__(
        self,
        node_id: int,
        config: SecAggConfig | None = None,
        *,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        if not isinstance(node_id, int) or not 0 <= node_id < 1 << 64:
            raise ProtocolError(f"node id must be an integer in [0, 2**64), got {node_id!r}")
        if (signer is None) != (verifier is None):
            raise ProtocolError(f"peer {node_id}: a signer and a verifier are given together or not at all")
        self.node_id = node_id
        self.config = config or SecAggConfig()
        self._signer = signer
        self._verifier = verifier
        self._round: _Round | None = None
        self._last_round: int | None = None

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """The client's round state as JSON-ready values (bytes as hex), to resume later.

        It holds the round's private keys and shares: keep it where the peer keeps its
        own secrets (Flower's node-local `context.state`), never in a message.
        """
        st = self._round
        state: dict = {"node_id": self.node_id, "last_round": self._last_round, "round": None}
        if st is None:
            return state
        hexa = lambda b: None if b is None else b.hex()  # noqa: E731
        state["round"] = {
            "round_id": st.round_id,
            "participants": sorted(st.participants),
            "round_seed": st.round_seed.hex(),
            "enc_key": st.enc_key.hex(),
            "mask_key": hexa(st.mask_key),
            "seed": hexa(st.seed),
            "stage": st.stage.value,
            "peer_keys": {
                str(v): {k: (x.hex() if isinstance(x, bytes) else x) for k, x in a.to_dict().items()}
                for v, a in st.peer_keys.items()
            },
            "own_share": [hex(st.own_share[0]), hex(st.own_share[1])],
            "partners": {str(v): [hex(b), hex(c)] for v, (b, c) in st.partners.items()},
            "rejected": {str(v): r for v, r in st.rejected.items()},
            "own_name": st.own_name,
            "peer_names": {str(v): n for v, n in st.peer_names.items()},
            "checked": None if st.checked is None else [list(st.checked[0]), list(st.checked[1])],
        }
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Resume from `state_dict()`; the config must be the one the state was made with."""
        if state.get("node_id") != self.node_id:
            raise ProtocolError(f"peer {self.node_id}: checkpoint belongs to peer {state.get('node_id')}")
        self._last_round = state.get("last_round")
        saved = state.get("round")
        if saved is None:
            self._round = None
            return
        unhex = lambda h: None if h is None else bytes.fromhex(h)  # noqa: E731
        parts = frozenset(saved["participants"])
        round_seed = bytes.fromhex(saved["round_seed"])
        mask_raw = unhex(saved["mask_key"])
        self._round = _Round(
            saved["round_id"],
            parts,
            round_seed,
            self.config.graph(parts, round_seed),
            self.config.encoder(len(parts)),
            bytes.fromhex(saved["enc_key"]),
            mask_raw,
            unhex(saved["seed"]),
            stage=ClientStage(saved["stage"]),
            peer_keys={
                int(v): AdvertiseKeys.from_dict(
                    {k: (bytes.fromhex(x) if k in _BYTES_FIELDS else x) for k, x in a.items()}
                )
                for v, a in saved["peer_keys"].items()
            },
            own_share=(int(saved["own_share"][0], 16), int(saved["own_share"][1], 16)),
            partners={int(v): (int(b, 16), int(c, 16)) for v, (b, c) in saved["partners"].items()},
            rejected={int(v): r for v, r in saved["rejected"].items()},
            own_name=saved.get("own_name", ""),
            peer_names={int(v): n for v, n in saved.get("peer_names", {}).items()},
            checked=None if saved.get("checked") is None else (tuple(saved["checked"][0]), tuple(saved["checked"][1])),
        )

    # ------------------------------------------------------------------ helpers
    @property
    def stage(self) -> ClientStage:
        return self._round.stage if self._round else ClientStage.IDLE

    def _fail(self, message: str) -> ProtocolError:
        if self._round is not None:
            self._round.stage = ClientStage.ABORTED
            self._round.mask_key = None
            self._round.seed = None
        return ProtocolError(f"peer {self.node_id}, round {self._last_round}: {message}")

    def _expect(self, round_id: int, stage: ClientStage, what: str) -> _Round:
        st = self._round
        if st is None or st.round_id != round_id:
            raise ProtocolError(
                f"peer {self.node_id}: {what} request for round {round_id}, but the current "
                f"round is {None if st is None else st.round_id}; refused"
            )
        if st.stage is not stage:
            raise ProtocolError(
                f"peer {self.node_id}, round {round_id}: {what} request in stage "
                f"'{st.stage.value}', expected stage '{stage.value}'; refused (out of order or replayed)"
            )
        return st

    def expect_mask_input(self, round_id: int) -> None:
        """Raise ProtocolError unless a mask-input request for ``round_id`` is due now.

        Lets the caller refuse a replayed or out-of-order request before it trains.
        """
        self._expect(round_id, ClientStage.SHARED, "mask-input")

    # ------------------------------------------------------------------ stage 0
    def advertise_keys(self, round_id: int, participants: Sequence[int], round_seed: bytes) -> AdvertiseKeys:
        """Start round ``round_id``: fresh key pairs and self-mask seed; advertise the public parts."""
        if not isinstance(round_id, int) or not 0 <= round_id < 1 << 64:
            raise ProtocolError(f"peer {self.node_id}: round id must be an integer in [0, 2**64)")
        if self._last_round is not None and round_id <= self._last_round:
            raise ProtocolError(
                f"peer {self.node_id}: round {round_id} is not newer than round "
                f"{self._last_round}; refusing to advertise keys again (replay?)"
            )
        parts = frozenset(participants)
        if self.node_id not in parts:
            raise ProtocolError(f"peer {self.node_id}: not among the participants of round {round_id}")
        graph = self.config.graph(parts, round_seed)
        encoder = self.config.encoder(len(parts))
        suite = self.config.crypto
        (enc_key, enc_pub), (mask_key, mask_pub) = K.agreement_keypair(suite=suite), K.agreement_keypair(suite=suite)
        seed = os.urandom(32)
        session = self.config.session_id
        commitment = K.seed_commitment(seed, session=session, round_id=round_id, node_id=self.node_id, suite=suite)
        signature = credential = b""
        own_name = ""
        if self._signer is not None and self._verifier is not None:  # given together (see __init__)
            credential = self._signer.credential
            transcript = K.advertise_transcript(
                session=session,
                round_id=round_id,
                node_id=self.node_id,
                enc_public_key=enc_pub,
                mask_public_key=mask_pub,
                seed_commitment=commitment,
                credential=credential,
                suite=suite,
            )
            signature = self._signer.sign(transcript)
            try:
                own_name = self._verifier.verify(credential, signature, transcript)
            except ValueError as exc:
                raise ProtocolError(f"peer {self.node_id}: my own identity is not admitted ({exc})") from None
        self._last_round = round_id
        self._round = _Round(round_id, parts, round_seed, graph, encoder, enc_key, mask_key, seed, own_name=own_name)
        return AdvertiseKeys(round_id, self.node_id, enc_pub, mask_pub, commitment, signature, credential)

    # ------------------------------------------------------------------ stage 1
    def share_keys(self, round_id: int, peer_keys: Mapping[int, AdvertiseKeys]) -> dict[int, EncryptedShares]:
        """Shamir-share ``b_u`` and ``s_u`` among the live neighbours; encrypt each pair of shares."""
        st = self._expect(round_id, ClientStage.ADVERTISED, "share-keys")
        me = self.node_id
        neighbours = st.graph.neighbours[me]
        session, suite = self.config.session_id, self.config.crypto
        mask_key, seed = st.secrets()
        own_keys = {K.agreement_public_key(st.enc_key, suite=suite), K.agreement_public_key(mask_key, suite=suite)}
        seen: set[bytes] = set()
        names: dict[int, str] = {}
        for v, adv in peer_keys.items():
            if v not in neighbours:
                raise self._fail(f"server sent keys of peer {v}, which is not my neighbour in this round's graph")
            if not isinstance(adv, AdvertiseKeys) or adv.node_id != v or adv.round_id != round_id:
                raise self._fail(f"keys relayed for peer {v} are malformed or belong to another peer/round")
            for raw in (adv.enc_public_key, adv.mask_public_key):
                try:
                    K.check_public_key(raw, probe=False, suite=suite)  # low order, off the curve: caught at agreement
                except ValueError as exc:
                    raise self._fail(f"peer {v} advertised an invalid key ({exc})") from None
                if raw in own_keys or raw in seen:
                    raise self._fail(f"peer {v} advertised a key that is mine or another peer's (reflection)")
                seen.add(raw)
            if self._verifier is not None:
                transcript = K.advertise_transcript(
                    session=session,
                    round_id=round_id,
                    node_id=v,
                    enc_public_key=adv.enc_public_key,
                    mask_public_key=adv.mask_public_key,
                    seed_commitment=adv.seed_commitment,
                    credential=adv.credential,
                    suite=suite,
                )
                try:
                    name = self._verifier.verify(adv.credential, adv.signature, transcript)
                except (ValueError, TypeError) as exc:
                    raise self._fail(
                        f"advertised keys of peer {v} carry an invalid signature ({exc}): "
                        f"the server substituted or altered them; round aborted, nothing shared"
                    ) from None
                if name == st.own_name or name in names.values():
                    raise self._fail(
                        f"advertised keys of peer {v} are signed by {name!r}, who already signed "
                        f"as another peer of this round; round aborted, nothing shared"
                    )
                names[v] = name
        t = st.graph.threshold
        if len(peer_keys) + 1 < t:
            raise self._fail(
                f"only {len(peer_keys)} of my neighbours remain, so my secrets would have "
                f"{len(peer_keys) + 1} holders, below the threshold {t}; refusing to share keys"
            )
        holders = sorted(peer_keys) + [me]
        secrets = [int.from_bytes(seed, "big"), int.from_bytes(mask_key, "big")]
        shares = shamir.split(secrets, [shamir.point_of(v) for v in holders], t)
        out: dict[int, EncryptedShares] = {}
        for v, (b_share, s_share) in zip(holders, shares):
            if v == me:
                st.own_share = (b_share, s_share)
                continue
            try:
                secret = K.agree(st.enc_key, peer_keys[v].enc_public_key, suite=suite)
            except ValueError as exc:
                raise self._fail(f"peer {v} advertised an unusable encryption key ({exc})") from None
            key = K.share_key(secret, session=session, round_id=round_id, src=me, dst=v, suite=suite)
            aad = K.share_aad(session=session, round_id=round_id, src=me, dst=v, suite=suite)
            plaintext = shamir.share_to_bytes(b_share) + shamir.share_to_bytes(s_share)
            nonce, ct = K.encrypt(key, plaintext, aad, suite=suite)
            out[v] = EncryptedShares(round_id, me, v, nonce, ct)
        st.peer_keys = dict(peer_keys)
        st.peer_names = names
        st.stage = ClientStage.SHARED
        return out

    # ------------------------------------------------------------------ stage 2
    def _open(self, st: _Round, src: int, msg: object) -> tuple[int, int]:
        me, session, suite = self.node_id, self.config.session_id, self.config.crypto
        if not isinstance(msg, EncryptedShares):
            raise ValueError("not an EncryptedShares message")
        if msg.src != src or msg.dst != me or msg.round_id != st.round_id:
            raise ValueError(
                f"addressed (round {msg.round_id}, {msg.src} -> {msg.dst}), expected "
                f"(round {st.round_id}, {src} -> {me})"
            )
        if not isinstance(msg.nonce, bytes) or len(msg.nonce) != K.NONCE_BYTES:
            raise ValueError("bad nonce")
        key = K.share_key(
            K.agree(st.enc_key, st.peer_keys[src].enc_public_key, suite=suite),
            session=session,
            round_id=st.round_id,
            src=src,
            dst=me,
            suite=suite,
        )
        aad = K.share_aad(session=session, round_id=st.round_id, src=src, dst=me, suite=suite)
        plaintext = K.decrypt(key, msg.nonce, msg.ciphertext, aad, suite=suite)
        if len(plaintext) != _PLAINTEXT_BYTES:
            raise ValueError("decrypted shares have the wrong length")
        return (
            shamir.share_from_bytes(plaintext[: shamir.SHARE_BYTES]),
            shamir.share_from_bytes(plaintext[shamir.SHARE_BYTES :]),
        )

    def mask_input(
        self,
        round_id: int,
        vector: np.ndarray,
        weight: float,
        received: Mapping[int, EncryptedShares],
    ) -> MaskedInput:
        """Encode ``[w~ x, w~]`` and mask it with ``PRG(b_u)`` and the pairwise masks.

        ``received`` holds the ciphertexts addressed to this peer, keyed by source.
        """
        st = self._expect(round_id, ClientStage.SHARED, "mask-input")
        me = self.node_id
        max_w = float(self.config.max_weight)
        if not (
            isinstance(weight, (int, float, np.floating, np.integer)) and math.isfinite(weight) and 0 <= weight <= max_w
        ):
            raise DataError(f"peer {me}: weight must lie in [0, max_weight={max_w}], got {weight!r}")
        partners: dict[int, tuple[int, int]] = {}
        rejected: dict[int, str] = {}
        for src in sorted(received):
            if src not in st.peer_keys:
                raise self._fail(
                    f"server forwarded shares from peer {src}, to whom I never sent shares "
                    f"(not a live neighbour at the share-keys stage)"
                )
            try:
                partners[src] = self._open(st, src, received[src])
            except ValueError as exc:
                rejected[src] = f"shares from peer {src} rejected: {exc}"
        t = st.graph.threshold
        if len(partners) + 1 < t:
            raise self._fail(
                f"only {len(partners)} valid shares received; with me that is below the threshold "
                f"{t}; refusing to send a masked input"
            )
        y = st.encoder.encode(vector, float(weight) / max_w)
        if self.config.noise is not None:
            sigma = self.config.noise.peer_sigma(st.encoder.scale)
            noise = sample_discrete_gaussian(sigma, y.shape[0] - 1)
            np.add(y[:-1], noise.view(np.uint64), out=y[:-1])  # two's complement: adds mod 2**64
        mask_key, seed = st.secrets()
        session, suite = self.config.session_id, self.config.crypto
        add_mask(y, seed, LABEL_SELF_MASK, suite=suite)
        for v in sorted(partners):
            try:
                secret = K.agree(mask_key, st.peer_keys[v].mask_public_key, suite=suite)
            except ValueError as exc:
                raise self._fail(f"peer {v} advertised an unusable mask key ({exc})") from None
            seed = K.mask_seed(secret, session=session, round_id=round_id, u=me, v=v, suite=suite)
            add_mask(y, seed, LABEL_PAIR_MASK, subtract=v < me, suite=suite)
        y &= st.encoder.mask
        st.partners = partners
        st.rejected = rejected
        st.mask_key = None  # no longer needed: its shares are out, its masks applied
        st.seed = None
        st.stage = ClientStage.MASKED
        return MaskedInput(round_id, me, y, rejected)

    # ------------------------------------------------------------------ consistency check
    def sign_survivors(self, round_id: int, survivors: Sequence[int], dropped: Sequence[int]) -> SurvivorSignature:
        """Check the survivor and dropout lists the server gave, and sign them.

        The lists are kept: ``unmask`` answers only a request for exactly these lists.
        """
        st = self._expect(round_id, ClientStage.MASKED, "consistency-check")
        me = self.node_id
        alive, gone = set(survivors), set(dropped)
        if len(alive) != len(survivors) or len(gone) != len(dropped):
            raise self._fail("consistency-check request lists a peer twice")
        both = alive & gone
        if both:
            raise self._fail(
                f"peer(s) {sorted(both)} listed both as survivor and as dropped; refusing to "
                f"reveal both secrets of one peer"
            )
        unknown = (alive | gone) - st.participants
        if unknown:
            raise self._fail(f"consistency-check request names peers {sorted(unknown)} that are not participants")
        if me not in alive:
            raise self._fail("the server lists me as not surviving although I sent my masked input")
        need = self.config.required_survivors(st.graph)
        if len(alive) < need:
            raise self._fail(f"only {len(alive)} survivors, fewer than the {need} required; refusing to unmask")
        for v in sorted(st.graph.neighbours[me] & (alive | gone)):
            if v in st.partners:
                continue
            if v in st.rejected and v in gone:
                continue  # its shares failed authentication: I hold nothing of it
            state = "survivor" if v in alive else "dropped"
            raise self._fail(f"server lists neighbour {v} as {state}, but I hold no valid shares from it")
        missing = set(st.partners) - alive - gone
        if missing:
            raise self._fail(
                f"neighbours {sorted(missing)} shared keys with me but are listed neither as survivor nor dropped"
            )
        live_holders = 1 + len(set(st.partners) & alive)
        if live_holders < st.graph.threshold:
            raise self._fail(
                f"only {live_holders} holders of my secrets survive, below the threshold "
                f"{st.graph.threshold}; refusing to unmask"
            )
        st.checked = (tuple(sorted(alive)), tuple(sorted(gone)))
        st.stage = ClientStage.CHECKED
        signature = credential = b""
        if self._signer is not None:
            credential = self._signer.credential
            signature = self._signer.sign(
                K.survivors_transcript(
                    session=self.config.session_id,
                    round_id=round_id,
                    node_id=me,
                    survivors=st.checked[0],
                    dropped=st.checked[1],
                    suite=self.config.crypto,
                )
            )
        return SurvivorSignature(round_id, me, credential, signature)

    def _check_signatures(self, st: _Round, signatures: Mapping[int, SurvivorSignature]) -> None:
        """At least ``threshold`` distinct survivors signed exactly the lists this peer signed."""
        assert st.checked is not None and self._verifier is not None
        survivors, dropped = st.checked
        names: dict[str, int] = {}
        for w in sorted(signatures):
            sig = signatures[w]
            if w not in survivors:
                raise self._fail(f"the unmask request carries a signature of peer {w}, which is not a survivor")
            if not isinstance(sig, SurvivorSignature) or sig.node_id != w or sig.round_id != st.round_id:
                raise self._fail(f"the survivor-list signature relayed for peer {w} is malformed")
            transcript = K.survivors_transcript(
                session=self.config.session_id,
                round_id=st.round_id,
                node_id=w,
                survivors=survivors,
                dropped=dropped,
                suite=self.config.crypto,
            )
            try:
                name = self._verifier.verify(sig.credential, sig.signature, transcript)
            except (ValueError, TypeError) as exc:
                raise self._fail(
                    f"peer {w}'s signature is not on the survivor list I signed ({exc}): the server told "
                    f"peers different survivor lists or altered one; refusing to unmask"
                ) from None
            known = st.own_name if w == self.node_id else st.peer_names.get(w)
            if (known is not None and name != known) or name in names:
                raise self._fail(
                    f"the survivor-list signature of peer {w} is by {name!r}, who signs as another "
                    f"peer of this round; refusing to unmask"
                )
            names[name] = w
        t = st.graph.threshold
        if len(names) < t:
            raise self._fail(
                f"only {len(names)} survivors' signatures on the survivor list I signed, "
                f"threshold {t}: the server may have told peers different survivor lists; "
                f"refusing to unmask"
            )

    # ------------------------------------------------------------------ stage 3
    def unmask(
        self,
        round_id: int,
        survivors: Sequence[int],
        dropped: Sequence[int],
        signatures: Mapping[int, SurvivorSignature] | None = None,
    ) -> UnmaskShares:
        """Reveal shares of ``b_v`` for survivors and of ``s_v`` for dropped peers -- never both.

        Only for the lists this peer signed in ``sign_survivors`` and, when
        authenticated, with ``signatures`` of at least ``threshold`` survivors on them.
        """
        st = self._expect(round_id, ClientStage.CHECKED, "unmask")
        me = self.node_id
        assert st.checked is not None
        if (
            (tuple(sorted(survivors)), tuple(sorted(dropped))) != st.checked
            or len(set(survivors)) != len(survivors)
            or len(set(dropped)) != len(dropped)
        ):
            raise self._fail(
                "the unmask request's survivor or dropout list differs from the one I signed; refusing to unmask"
            )
        if self._verifier is not None:
            self._check_signatures(st, signatures or {})
        alive, gone = set(survivors), set(dropped)
        seed_shares = {v: shamir.share_to_bytes(st.partners[v][0]) for v in st.partners if v in alive}
        seed_shares[me] = shamir.share_to_bytes(st.own_share[0])
        key_shares = {v: shamir.share_to_bytes(st.partners[v][1]) for v in st.partners if v in gone}
        st.stage = ClientStage.DONE
        st.partners = {}
        st.own_share = (0, 0)
        return UnmaskShares(round_id, me, seed_shares, key_shares)
