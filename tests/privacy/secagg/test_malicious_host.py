"""The host as attacker: it relays every message, so it can swap keys and lie about dropouts.

Each test plays the host with its full knowledge (every advertised key, every relayed
ciphertext, every masked upload) and checks that the attack fails against
authenticated peers. The key-swap attack is also run against unauthenticated peers
(what a deployment had before peers signed their keys), where it recovers the
victim's update: the same code, with signatures, refuses it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsilo.errors import ProtocolError
from fedsilo.privacy.secagg import Ed25519Identity, EncryptedShares, ServerStage, shamir
from fedsilo.privacy.secagg import keys as K
from fedsilo.privacy.secagg.prg import LABEL_PAIR_MASK, LABEL_SELF_MASK, add_mask

from ._harness import ROUND, Harness, stranger

SUITES = ["standard", "gm"]


# ---------------------------------------------------------------- key substitution
def _swap_neighbour_keys(h: Harness, victim: int, resign=None):
    """The host replaces the keys of every neighbour of `victim` by its own; returns them and the forged request."""
    request = h.requests[victim]
    own = {}
    forged = {}
    suite = h.config.crypto
    for v, adv in request.peer_keys.items():
        (enc, enc_public), (mask, mask_public) = K.agreement_keypair(suite=suite), K.agreement_keypair(suite=suite)
        own[v] = (enc, mask)
        fake = dataclasses.replace(adv, enc_public_key=enc_public, mask_public_key=mask_public)
        if resign is not None:
            fake = resign(v, fake)
        forged[v] = fake
    return own, forged


def _steal_update(h: Harness, victim: int, own: dict, shares: dict[int, EncryptedShares]) -> np.ndarray:
    """With the victim's shares opened under the host's keys: its self-mask seed, then its input."""
    me = h.clients[victim]
    session, suite = h.config.session_id, h.config.crypto
    adv = h.server._adverts[victim]  # what the victim advertised: its public keys
    points, rows = [], []
    for v, enc_shares in shares.items():
        secret = K.agree(own[v][0], adv.enc_public_key, suite=suite)
        key = K.share_key(secret, session=session, round_id=ROUND, src=victim, dst=v, suite=suite)
        plain = K.decrypt(
            key,
            enc_shares.nonce,
            enc_shares.ciphertext,
            K.share_aad(session=session, round_id=ROUND, src=victim, dst=v, suite=suite),
            suite=suite,
        )
        points.append(shamir.point_of(v))
        rows.append([shamir.share_from_bytes(plain[: shamir.SHARE_BYTES])])
    t = h.server.threshold
    seed = shamir.reconstruct(points[:t], rows[:t])[0].to_bytes(32, "big")
    # the host now feeds the victim shares "from" its neighbours, under the same substituted keys
    fake_in = {}
    for v in shares:
        secret = K.agree(own[v][0], adv.enc_public_key, suite=suite)
        key = K.share_key(secret, session=session, round_id=ROUND, src=v, dst=victim, suite=suite)
        nonce, ct = K.encrypt(
            key,
            shamir.share_to_bytes(1) * 2,
            K.share_aad(session=session, round_id=ROUND, src=v, dst=victim, suite=suite),
            suite=suite,
        )
        fake_in[v] = EncryptedShares(ROUND, v, victim, nonce, ct)
    masked = me.mask_input(ROUND, h.inputs[victim], h.weights[victim], fake_in).masked.copy()
    add_mask(masked, seed, LABEL_SELF_MASK, subtract=True, suite=suite)
    for v in shares:
        pair = K.mask_seed(
            K.agree(own[v][1], adv.mask_public_key, suite=suite),
            session=session,
            round_id=ROUND,
            u=victim,
            v=v,
            suite=suite,
        )
        add_mask(masked, pair, LABEL_PAIR_MASK, subtract=not v < victim, suite=suite)
    masked &= h.server.encoder.mask
    values, weight = h.server.encoder.decode_sum(masked, 1)
    return values / weight


@pytest.mark.parametrize("suite", SUITES)
def test_without_signatures_a_host_that_swaps_keys_recovers_the_victims_update(suite):
    """The attack itself, on peers that do not authenticate keys (the old deployment)."""
    h = Harness(5, dim=16, seed=3, authenticated=False, suite=suite)
    h.advertise()
    victim = h.nodes[0]
    own, forged = _swap_neighbour_keys(h, victim)
    shares = h.clients[victim].share_keys(ROUND, forged)
    stolen = _steal_update(h, victim, own, shares)
    np.testing.assert_allclose(stolen, np.clip(h.inputs[victim], -1, 1), atol=1e-5)


@pytest.mark.parametrize("suite", SUITES)
def test_a_host_that_swaps_one_neighbours_key_is_refused_by_name_and_learns_nothing(suite):
    h = Harness(5, dim=16, seed=3, suite=suite)
    h.advertise()
    victim, swapped = h.nodes[0], h.nodes[2]
    request = h.requests[victim]
    _, enc_public = K.agreement_keypair(suite=h.config.crypto)
    forged = dict(request.peer_keys)
    forged[swapped] = dataclasses.replace(forged[swapped], enc_public_key=enc_public)
    h.requests[victim] = dataclasses.replace(request, peer_keys=forged)
    with pytest.raises(ProtocolError, match=f"advertised keys of peer {swapped} carry an invalid signature"):
        h.clients[victim].share_keys(ROUND, forged)
    # the victim's round is over: it shares nothing, masks nothing, unmasks nothing
    with pytest.raises(ProtocolError, match="expected stage 'advertised'"):
        h.clients[victim].share_keys(ROUND, request.peer_keys)
    with pytest.raises(ProtocolError):
        h.clients[victim].expect_mask_input(ROUND)
    # the host carries on without it: all it ever got from the victim are its public keys
    h.gone.add(victim)
    h.share()
    h.mask()
    result = h.unmask()
    assert victim not in result.survivors and victim not in result.dropped
    h.check_exact(result)


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("how", ["own identity", "colluding peer's identity", "victim's own identity"])
def test_a_host_that_re_signs_swapped_keys_is_refused(how, suite):
    """Re-signing with a key outside the consortium, or with an identity that already signs
    another peer of the round (a colluding member, the victim itself), is refused too."""
    h = Harness(5, dim=16, seed=3, suite=suite)
    h.advertise()
    victim, colluder = h.nodes[0], h.nodes[4]
    signer = {
        "own identity": stranger(suite),
        "colluding peer's identity": h.signers[colluder],
        "victim's own identity": h.signers[victim],
    }[how]

    def resign(v, adv):
        adv = dataclasses.replace(adv, credential=signer.credential)
        transcript = K.advertise_transcript(
            session=h.config.session_id,
            round_id=ROUND,
            node_id=v,
            enc_public_key=adv.enc_public_key,
            mask_public_key=adv.mask_public_key,
            seed_commitment=adv.seed_commitment,
            credential=adv.credential,
            suite=h.config.crypto,
        )
        return dataclasses.replace(adv, signature=signer.sign(transcript))

    own, forged = _swap_neighbour_keys(h, victim, resign)
    match = "not an admitted identity" if how == "own identity" else "already signed as another peer"
    with pytest.raises(ProtocolError, match=match):
        h.clients[victim].share_keys(ROUND, forged)


@pytest.mark.parametrize("suite", SUITES)
def test_signatures_are_bound_to_the_job_and_the_round(suite):
    """Keys signed for another job or round, replayed by the host, do not verify."""
    h = Harness(5, dim=8, seed=4, suite=suite)
    h.advertise()
    victim, v = h.nodes[0], h.nodes[1]
    other = Harness(5, dim=8, seed=4, suite=suite)  # the same node ids; the same peers' identities below
    other.signers, other.verifier = h.signers, h.verifier
    other.clients = {u: other.make_client(u) for u in other.nodes}
    other.clients[v].advertise_keys(ROUND + 1, other.nodes, other.server.setup.round_seed)
    replayed = other.clients[v].advertise_keys(ROUND + 2, other.nodes, other.server.setup.round_seed)
    forged = dict(h.requests[victim].peer_keys)
    forged[v] = dataclasses.replace(replayed, round_id=ROUND)
    with pytest.raises(ProtocolError, match=f"peer {v} carry an invalid signature"):
        h.clients[victim].share_keys(ROUND, forged)


# ---------------------------------------------------------------- inconsistent dropout stories
def _masked(n: int, seed: int) -> Harness:
    h = Harness(n, dim=16, seed=seed)
    h.advertise()
    h.share()
    h.mask()
    assert h.server.stage is ServerStage.CONSISTENCY
    return h


@pytest.mark.parametrize("forward", ["every signature", "the signatures on the peer's own list"])
def test_a_host_that_tells_two_groups_different_survivor_lists_is_caught_before_any_share_leaves(forward):
    """The host says "u dropped" to some peers and "u survived" to the others, to get both of u's
    secrets. No group reaches the threshold of signatures on its list: every peer refuses."""
    h = _masked(4, seed=12)
    assert h.server.threshold == 3
    u = h.nodes[0]
    everyone, without_u = tuple(h.nodes), tuple(h.nodes[1:])
    told = {
        h.nodes[0]: (everyone, ()),
        h.nodes[1]: (everyone, ()),
        h.nodes[2]: (without_u, (u,)),
        h.nodes[3]: (without_u, (u,)),
    }
    signatures = {w: h.clients[w].sign_survivors(ROUND, *told[w]) for w in h.nodes}
    revealed = []
    for w in h.nodes:
        if forward == "every signature":
            sent, match = signatures, "not on the survivor list I signed|which is not a survivor"
        else:
            sent = {x: sig for x, sig in signatures.items() if told[x] == told[w]}
            match = "only 2 survivors' signatures on the survivor list I signed, threshold 3"
        with pytest.raises(ProtocolError, match=match):
            revealed.append(h.clients[w].unmask(ROUND, *told[w], sent))
    assert revealed == []


def test_with_only_the_matching_signatures_a_minority_list_is_refused():
    h = _masked(4, seed=12)
    u, w = h.nodes[0], h.nodes[3]
    without_u = tuple(h.nodes[1:])
    sig_w = h.clients[w].sign_survivors(ROUND, without_u, (u,))
    with pytest.raises(ProtocolError, match=f"peer {w}, round {ROUND}: only 1 survivors' signatures"):
        h.clients[w].unmask(ROUND, without_u, (u,), {w: sig_w})


def test_a_peer_unmasks_only_the_list_it_signed():
    h = _masked(5, seed=13)
    h.check()
    w = h.nodes[1]
    request = h.requests[w]
    with pytest.raises(ProtocolError, match="differs from the one I signed"):
        h.clients[w].unmask(ROUND, request.survivors[1:], (request.survivors[0],), request.signatures)


def test_signatures_from_one_identity_count_once_and_strangers_not_at_all():
    h = _masked(5, seed=13)
    h.check()
    w = h.nodes[1]
    request = h.requests[w]
    stranger = Ed25519Identity("the-host", Ed25519PrivateKey.generate())
    x = h.nodes[2]
    forged = dict(request.signatures)
    forged[x] = dataclasses.replace(
        forged[x],
        credential=stranger.credential,
        signature=stranger.sign(
            K.survivors_transcript(
                session=h.config.session_id,
                round_id=ROUND,
                node_id=x,
                survivors=request.survivors,
                dropped=request.dropped,
            )
        ),
    )
    with pytest.raises(ProtocolError, match="not an admitted identity"):
        h.clients[w].unmask(ROUND, request.survivors, request.dropped, forged)
    h2 = _masked(5, seed=13)
    h2.check()
    request = h2.requests[w]
    y, z = h2.nodes[2], h2.nodes[3]
    reused = dict(request.signatures)
    reused[z] = dataclasses.replace(
        reused[y],
        node_id=z,
        signature=h2.signers[y].sign(
            K.survivors_transcript(
                session=h2.config.session_id,
                round_id=ROUND,
                node_id=z,
                survivors=request.survivors,
                dropped=request.dropped,
            )
        ),
    )
    with pytest.raises(ProtocolError, match="who signs as another peer"):
        h2.clients[w].unmask(ROUND, request.survivors, request.dropped, reused)


def test_the_host_refuses_a_bad_survivor_signature_and_the_round_still_completes():
    h = _masked(6, seed=14)
    bad = h.nodes[1]
    h.check(tamper=lambda u, m: dataclasses.replace(m, signature=b"\x00" * 64) if u == bad else m)
    assert "signed the survivor list with a signature that does not verify" in h.refused[bad].reason
    result = h.unmask()
    assert bad in result.survivors  # its masked input is in the sum; it just does not unmask
    h.check_exact(result)


def test_dropouts_at_the_consistency_check_keep_the_round_exact():
    h = _masked(8, seed=15)
    h.check(drop=[h.nodes[2]])
    result = h.unmask()
    assert h.nodes[2] in result.survivors
    h.check_exact(result)


def test_too_few_signers_abort_before_anything_is_unmasked():
    from fedsilo.privacy.secagg import ThresholdNotMet

    h = _masked(5, seed=16)
    with pytest.raises(ThresholdNotMet, match="signed the survivor list"):
        h.check(drop=h.nodes[:3])
    assert h.server.stage is ServerStage.ABORTED
