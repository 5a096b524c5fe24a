"""Bad messages are refused with a reason naming the peer; honest peers finish the round."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedsilo.errors import ProtocolError
from fedsilo.privacy.secagg import PeerRejected, SecAggConfig
from fedsilo.privacy.secagg import keys as K

from ._harness import CONFIG, ROUND, Harness


def _finish(h: Harness, *, from_stage: str):
    order = ["advertise", "share", "mask", "unmask"]
    result = None
    for stage in order[order.index(from_stage) :]:
        result = getattr(h, stage)()
    return result


def _bad_peer_round(n=5, seed=11):
    h = Harness(n, dim=24, seed=seed)
    return h, h.nodes[1]


def _assert_refused(h: Harness, bad: int, *fragments: str):
    assert bad in h.refused, f"peer {bad} was not refused"
    message = str(h.refused[bad])
    assert f"peer {bad}" in message
    for fragment in fragments:
        assert fragment in message, message
    assert bad in h.server.rejections


def test_wrong_length_masked_input():
    h, bad = _bad_peer_round()
    h.advertise()
    h.share()
    h.mask(tamper=lambda u, m: dataclasses.replace(m, masked=m.masked[:-1]) if u == bad else m)
    _assert_refused(h, bad, "wrong length")
    result = h.unmask()
    assert bad not in result.survivors and bad in result.dropped
    h.check_exact(result)


def test_wrong_dtype_masked_input():
    h, bad = _bad_peer_round()
    h.advertise()
    h.share()
    h.mask(tamper=lambda u, m: dataclasses.replace(m, masked=m.masked.astype(np.float64)) if u == bad else m)
    _assert_refused(h, bad, "dtype float64")
    h.check_exact(h.unmask())


def test_values_outside_the_group():
    h, bad = _bad_peer_round()
    h.advertise()
    h.share()
    big = np.uint64(h.server.encoder.modulus)

    def tamper(u, m):
        if u != bad:
            return m
        y = m.masked.copy()
        y[0] = big
        return dataclasses.replace(m, masked=y)

    h.mask(tamper=tamper)
    _assert_refused(h, bad, "outside Z_M")
    h.check_exact(h.unmask())


def test_wrong_round():
    h, bad = _bad_peer_round()
    h.advertise(tamper=lambda u, m: dataclasses.replace(m, round_id=ROUND + 1) if u == bad else m)
    _assert_refused(h, bad, "wrong round")
    result = _finish(h, from_stage="share")
    assert bad not in result.survivors
    h.check_exact(result)


def test_wrong_stage():
    h, bad = _bad_peer_round()
    h.advertise()
    # during the share-keys stage the bad peer sends a masked input
    with pytest.raises(PeerRejected, match=f"peer {bad}.*wrong stage"):
        h.server.receive_masked_input(bad, None)
    h.gone.add(bad)
    result = _finish(h, from_stage="share")
    assert bad not in result.survivors
    h.check_exact(result)


def test_duplicate_message_is_a_replay():
    h, bad = _bad_peer_round()
    s = h.server.setup
    first = h.clients[bad].advertise_keys(s.round_id, s.participants, s.round_seed)
    h.server.receive_advertise(bad, first)
    with pytest.raises(PeerRejected, match=f"peer {bad}.*duplicate"):
        h.server.receive_advertise(bad, first)
    h.gone.add(bad)
    result = h.run()
    assert bad not in result.survivors
    h.check_exact(result)


def test_duplicate_masked_input_is_removed_from_the_sum():
    h, bad = _bad_peer_round()
    h.advertise()
    h.share()
    sent = {}
    h.mask(tamper=lambda u, m: sent.setdefault(u, m))
    # the requests are issued; replay attempts now hit the wrong stage
    with pytest.raises(PeerRejected, match=f"peer {bad}.*wrong stage"):
        h.server.receive_masked_input(bad, sent[bad])
    result = h.unmask(drop=[bad])
    h.check_exact(result)


def test_duplicate_within_stage_drops_the_peer_and_its_input():
    h, bad = _bad_peer_round()
    h.advertise()
    h.share()
    reqs = h.requests
    for u, req in reqs.items():
        msg = h.clients[u].mask_input(req.round_id, h.inputs[u], h.weights[u], req.shares)
        h.server.receive_masked_input(u, msg)
        if u == bad:
            with pytest.raises(PeerRejected, match="duplicate"):
                h.server.receive_masked_input(u, msg)
    h.requests = h.server.end_mask_input()
    result = h.unmask()
    assert bad in result.dropped
    h.check_exact(result)


def test_tampered_ciphertext_fails_authentication_and_drops_the_sender():
    h, bad = _bad_peer_round()
    h.advertise()
    h.share()
    victim = h.nodes[3]
    enc = h.requests[victim].shares[bad]
    flipped = bytearray(enc.ciphertext)
    flipped[5] ^= 0x01
    h.requests[victim].shares[bad] = dataclasses.replace(enc, ciphertext=bytes(flipped))
    h.mask()
    reason = h.server.rejections[bad]
    assert f"peer {victim} reports" in reason and f"peer {bad}" in reason and "authentication" in reason
    result = h.unmask()
    assert bad in result.dropped and bad not in result.survivors
    h.check_exact(result)


def test_ciphertext_relayed_to_the_wrong_peer_fails_authentication():
    h, bad = _bad_peer_round(n=10)
    h.advertise()
    h.share()
    a, b = h.nodes[3], h.nodes[4]
    # the relay swaps the ciphertexts that `bad` sent to a and to b
    ea, eb = h.requests[a].shares[bad], h.requests[b].shares[bad]
    h.requests[a].shares[bad] = dataclasses.replace(eb, dst=a)
    h.requests[b].shares[bad] = dataclasses.replace(ea, dst=b)
    h.mask()
    assert "authentication" in h.server.rejections[bad]
    h.check_exact(h.unmask())


def test_unsolicited_answer():
    h, bad = _bad_peer_round()
    h.advertise(drop=[bad])  # bad never advertised
    # ... yet it answers the share-keys stage
    with pytest.raises(PeerRejected, match=f"peer {bad}.*unsolicited"):
        h.server.receive_shares(bad, {})
    result = _finish(h, from_stage="share")
    h.check_exact(result)


def test_unknown_peer_and_impersonation():
    h, bad = _bad_peer_round()
    with pytest.raises(PeerRejected, match="not a participant"):
        h.server.receive_advertise(12345, None)
    s = h.server.setup
    other = h.nodes[2]
    adv = h.clients[other].advertise_keys(s.round_id, s.participants, s.round_seed)
    with pytest.raises(PeerRejected, match=f"peer {bad}: sent keys claiming to be peer {other}"):
        h.server.receive_advertise(bad, adv)


def test_shares_to_the_wrong_peers_are_refused():
    h, bad = _bad_peer_round()
    h.advertise()

    def tamper(u, shares):
        if u != bad:
            return shares
        shares = dict(shares)
        shares.pop(next(iter(shares)))
        return shares

    h.share(tamper=tamper)
    _assert_refused(h, bad, "wrong peers")
    h.check_exact(_finish(h, from_stage="mask"))


def test_bad_unmask_answer_is_refused_round_continues():
    h, bad = _bad_peer_round()
    h.advertise()
    h.share()
    h.mask()
    result = h.unmask(tamper=lambda u, m: dataclasses.replace(m, key_shares={h.nodes[0]: b"x" * 66}) if u == bad else m)
    _assert_refused(h, bad, "wrong peers")
    assert bad in result.survivors  # its input counts; its b was rebuilt from the others' shares
    h.check_exact(result)


def test_below_threshold_after_rejections_aborts():
    h = Harness(5, dim=8, seed=3)
    bad = set(h.nodes[:3])
    from fedsilo.privacy.secagg import ThresholdNotMet

    with pytest.raises(ThresholdNotMet):
        h.advertise(tamper=lambda u, m: dataclasses.replace(m, round_id=0) if u in bad else m)
    assert bad <= set(h.refused)


# --------------------------------------------------------------------------- client refusals
def _masked_round():
    h = Harness(5, dim=8, seed=21)
    h.advertise()
    h.share()
    h.mask()
    return h


def test_client_refuses_to_reveal_both_secrets_of_a_peer():
    h = _masked_round()
    u = h.nodes[0]
    v = h.nodes[1]
    with pytest.raises(ProtocolError, match=f"peer\\(s\\) \\[{v}\\] listed both"):
        h.clients[u].sign_survivors(ROUND, h.nodes, [v])
    # the refusal ends the round for that client: no second chance with other lists
    with pytest.raises(ProtocolError):
        h.clients[u].sign_survivors(ROUND, h.nodes, [])


def test_client_refuses_when_told_it_dropped_or_too_few_survive():
    h = _masked_round()
    u, w = h.nodes[0], h.nodes[1]
    with pytest.raises(ProtocolError, match="not surviving"):
        h.clients[u].sign_survivors(ROUND, h.nodes[1:], [u])
    with pytest.raises(ProtocolError, match="required"):
        h.clients[w].sign_survivors(ROUND, h.nodes[:2], h.nodes[2:])


def test_client_refuses_unmask_that_omits_a_partner():
    h = _masked_round()
    u = h.nodes[0]
    with pytest.raises(ProtocolError, match="neither as survivor nor dropped"):
        h.clients[u].sign_survivors(ROUND, h.nodes[:4], [])


def test_client_answers_only_once():
    h = _masked_round()
    h.check()
    u = h.nodes[0]
    req = h.requests[u]
    h.clients[u].unmask(ROUND, req.survivors, req.dropped, req.signatures)
    with pytest.raises(ProtocolError, match="stage"):
        h.clients[u].unmask(ROUND, req.survivors, req.dropped, req.signatures)
    with pytest.raises(ProtocolError, match="stage"):
        h.clients[u].sign_survivors(ROUND, h.nodes[:4], [h.nodes[4]])


def test_client_refuses_keys_of_non_neighbours_and_reflection():
    h = Harness(40, dim=8, seed=5)
    h.advertise()
    u = h.nodes[0]
    req = h.requests[u]
    stranger = next(v for v in h.nodes if v != u and v not in h.server.graph.neighbours[u])
    keys = dict(req.peer_keys)
    keys[stranger] = h.server._adverts[stranger]
    with pytest.raises(ProtocolError, match=f"peer {stranger}, which is not my neighbour"):
        h.clients[u].share_keys(ROUND, keys)

    h2 = Harness(5, dim=8, seed=5)
    h2.advertise()
    u, v = h2.nodes[0], h2.nodes[1]
    mine = h2.server._adverts[u]
    keys = dict(h2.requests[u].peer_keys)
    keys[v] = dataclasses.replace(keys[v], enc_public_key=mine.enc_public_key)
    with pytest.raises(ProtocolError, match=f"peer {v} advertised a key that is mine"):
        h2.clients[u].share_keys(ROUND, keys)


def test_signed_keys_prevent_substitution_by_the_server():
    h = Harness(5, dim=8, seed=6)
    h.advertise()
    u, v = h.nodes[0], h.nodes[1]
    attacker = K.generate_key()
    keys = dict(h.requests[u].peer_keys)
    keys[v] = dataclasses.replace(keys[v], enc_public_key=K.public_bytes(attacker))
    with pytest.raises(ProtocolError, match=f"keys of peer {v} carry an invalid signature"):
        h.clients[u].share_keys(ROUND, keys)


def test_server_rejects_unsigned_keys_when_identities_are_known():
    h = Harness(5, dim=8, seed=6)
    bad = h.nodes[2]
    h.advertise(tamper=lambda u, m: dataclasses.replace(m, signature=b"") if u == bad else m)
    _assert_refused(h, bad, "signature")
    h.check_exact(_finish(h, from_stage="share"))


def test_low_order_key_is_refused():
    h, bad = _bad_peer_round()
    h.advertise(tamper=lambda u, m: dataclasses.replace(m, mask_public_key=bytes(32)) if u == bad else m)
    _assert_refused(h, bad, "invalid mask_public_key")


def test_session_binding_separates_jobs():
    """Shares made under another job's session id do not open: AAD and keys bind the job."""
    other_job = SecAggConfig(clip=1.0, bits=24, max_weight=1000.0, session_id=b"other-job")
    h = Harness(5, dim=8, seed=8, authenticated=False)  # signatures would refuse even earlier
    h.advertise()
    u = h.nodes[0]
    h.clients[u].config = other_job  # u derives its keys for another job from here on
    h.share()
    req = h.requests[u]
    with pytest.raises(ProtocolError, match="valid shares"):
        h.clients[u].mask_input(ROUND, h.inputs[u], h.weights[u], req.shares)
    h.gone.add(u)
    h.mask()
    assert "authentication" in h.server.rejections[u]
    result = h.unmask()
    assert u in result.dropped and CONFIG.session_id == b""
    h.check_exact(result)


def test_client_notices_a_forwarding_gap():
    """The server forwarded v's shares to every neighbour but u: u refuses to unmask."""
    h = Harness(5, dim=64, seed=17)
    h.advertise()
    h.share()
    u, v = h.nodes[0], h.nodes[1]
    del h.requests[u].shares[v]
    h.mask()
    with pytest.raises(ProtocolError, match=f"peer {u}.*neighbour {v} as survivor, but I hold no valid shares"):
        h.unmask()


def test_corrupted_masked_input_is_detected_not_released():
    """A well-formed but wrongly masked upload makes the masks not cancel: nothing is released."""
    h = Harness(5, dim=64, seed=17)
    h.advertise()
    h.share()
    bad = h.nodes[2]
    mask = h.server.encoder.mask

    def tamper(u, m):
        if u != bad:
            return m
        y = (m.masked + np.arange(1, m.masked.size + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) & mask
        return dataclasses.replace(m, masked=y)

    h.mask(tamper=tamper)
    with pytest.raises(ProtocolError, match="masks did not cancel"):
        h.unmask()
