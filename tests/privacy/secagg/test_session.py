"""Multi-release SecAgg+ sessions: exact sums across releases, and the host as attacker.

The attacker is the host: it relays every message, keeps every masked vector and every
revealed share, and chooses whom to call dropped. Each test plays it with that
knowledge and checks that the peers' refusals (or the independence of each release's
keys) leave it nothing but the sums.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedsilo.errors import ProtocolError
from fedsilo.privacy.secagg import PeerRejected, SecAggConfig, ThresholdNotMet, shamir
from fedsilo.privacy.secagg.prg import LABEL_PAIR_MASK, LABEL_SELF_MASK, add_mask
from fedsilo.privacy.secagg.session import ReleaseRequest, SessionClient, pair_seed
from fedsilo.privacy.secagg.session_server import SessionServer

from ._session_harness import CONFIGS, Session

DIM = 40


def _inputs(s: Session, rng: np.random.Generator, clip: float = 1.0) -> dict[int, np.ndarray]:
    return {u: rng.uniform(-clip, clip, DIM) for u in s.nodes}


def test_exact_sums_across_many_releases_with_dropouts_until_the_session_runs_out() -> None:
    s = Session(10, releases=14)
    assert s.open() == frozenset(s.nodes)
    rng = np.random.default_rng(3)
    drops = {3: {s.nodes[2]}, 6: {s.nodes[5]}, 9: {s.nodes[7]}}  # 3 of 10: the most this graph tolerates
    for r in range(1, 13):
        purpose = "a" if r % 3 else "b"
        x = _inputs(s, rng, CONFIGS[purpose].clip)
        before = s.host.members
        server, total = s.release(r, purpose, x, drops.get(r, ()))
        assert total is not None, r
        expected = sum(x[u] for u in before - drops.get(r, set()))
        bound = s.configs[purpose].encoder(10).average_error_bound(len(before), 1.0)
        assert np.abs(total - expected).max() <= bound * len(before) + 1e-9
        assert s.host.members == before - drops.get(r, set())  # a dropped peer leaves the session for good
    # two more dropouts leave 5 survivors, below the threshold: the release aborts before anything is unmasked
    t = s.host.graph.threshold
    assert len(s.host.members) - 2 < t
    server, total = s.release(13, "a", _inputs(s, rng), {s.nodes[0], s.nodes[1]})
    assert total is None and server.stage.value == "aborted" and not server._unmask
    for u in s.host.members:  # nobody was asked for a share, nobody signed a new dropout
        assert s.nodes[0] not in s.clients[u].gone
    assert s.host.members == frozenset(s.nodes) - {s.nodes[i] for i in (0, 1, 2, 5, 7)}
    with pytest.raises(ThresholdNotMet, match="open a new session"):
        s.host.release(14, "a", DIM)


def test_a_replayed_release_index_or_session_is_refused_by_peer_and_host() -> None:
    s = Session(5, releases=4)
    s.open()
    rng = np.random.default_rng(1)
    s.release(1, "a", _inputs(s, rng))
    s.release(3, "a", _inputs(s, rng))  # skipping an index is allowed: index 2's secrets are erased unused
    u = s.nodes[0]
    for r in (1, 2, 3):
        request = ReleaseRequest(s.host.session_round, r, "a", tuple(s.nodes))
        with pytest.raises(ProtocolError, match="increasing order"):
            s.clients[u].mask(request, np.zeros(DIM))
        with pytest.raises(ProtocolError, match="increasing order"):
            s.host.release(r, "a", DIM)
    with pytest.raises(ProtocolError, match="increasing order"):
        s.clients[u].mask(ReleaseRequest(s.host.session_round, 5, "a", tuple(s.nodes)), np.zeros(DIM))
    with pytest.raises(ProtocolError, match="not newer"):
        s.clients[u].keys(s.host.setup)  # the same session opened again
    # the release after a refused replay still sums exactly: the refusal did not touch the session
    x = _inputs(s, rng)
    _, total = s.release(4, "a", x)
    assert np.allclose(total, sum(x.values()), atol=1e-5)


def _host_round(s: Session, r: int, x: dict[int, np.ndarray], claim_dropped: int):
    """The host receives every masked input, `claim_dropped`'s too, but tells the others it dropped."""
    server, requests = s.host.release(r, "a", DIM)
    masked = {u: s.clients[u].mask(requests[u], x[u]) for u in requests}
    for u, m in masked.items():
        if u != claim_dropped:
            server.receive_masked_input(u, m)
    revealed = {}
    checks = server.end_mask_input()
    assert checks[s.nodes[0]].dropped == (claim_dropped,)
    for u, c in checks.items():
        server.receive_consistency(u, s.clients[u].sign(s.host.session_round, r, c.survivors, c.dropped))
    for u, q in server.end_consistency().items():
        revealed[u] = s.clients[u].unmask(s.host.session_round, r, q.survivors, q.dropped, q.signatures)
        server.receive_unmask(u, revealed[u])
    server.aggregate()
    return server, masked, revealed, q


def _rebuild(revealed: dict, field: str, v: int, t: int) -> bytes:
    holders = sorted(w for w, m in revealed.items() if v in getattr(m, field))[:t]
    rows = [[shamir.share_from_bytes(getattr(revealed[w], field)[v])] for w in holders]
    return shamir.reconstruct([shamir.point_of(w) for w in holders], rows)[0].to_bytes(32, "big")


def _strip(masked: np.ndarray, victim: int, seed: bytes | None, pair_seeds: dict[int, bytes]) -> np.ndarray:
    """The host's best attempt at the victim's input: remove every mask it can compute, decode."""
    y = masked.copy()
    if seed is not None:
        add_mask(y, seed, LABEL_SELF_MASK, subtract=True)
    for v, pair in pair_seeds.items():
        add_mask(y, pair, LABEL_PAIR_MASK, subtract=v > victim)
    encoder = CONFIGS["a"].encoder(10)
    y &= encoder.mask
    return y[:-1].astype(np.float64) / encoder.scale - CONFIGS["a"].clip


def test_a_host_that_got_a_banks_pairwise_seeds_cannot_unmask_it_in_that_or_any_other_release() -> None:
    s = Session(10, releases=6)
    s.open()
    rng = np.random.default_rng(7)
    victim = s.nodes[4]
    t = s.host.graph.threshold
    x1 = _inputs(s, rng)
    server1, masked1, revealed1, _ = _host_round(s, 1, x1, claim_dropped=s.nodes[9])  # victim survives release 1
    seed1 = _rebuild(revealed1, "seed_shares", victim, t)  # legitimately rebuilt to unmask the sum
    x2 = _inputs(s, rng)
    server2, masked2, revealed2, q2 = _host_round(s, 2, x2, claim_dropped=victim)  # victim "dropped" in release 2
    pairs2 = {u: m.key_shares[victim] for u, m in revealed2.items() if victim in m.key_shares}
    assert set(pairs2) == set(q2.survivors)  # every survivor revealed its release-2 seed with the victim ...
    pairs2 = {u: shamir.share_from_bytes(raw).to_bytes(32, "big") for u, raw in pairs2.items()}
    assert all(victim not in m.seed_shares for m in revealed2.values())  # ... and nobody a share of b^2
    # 1. release 2 itself: the survivors refuse to vouch or unmask again, so b^2 never leaves them
    for u in q2.survivors:
        with pytest.raises(ProtocolError, match="refused"):
            s.clients[u].sign(s.host.session_round, 2, (*q2.survivors, victim), ())
        with pytest.raises(ProtocolError, match="refused"):
            s.clients[u].unmask(s.host.session_round, 2, (*q2.survivors, victim), (), q2.signatures)
    assert np.abs(_strip(masked2[victim].masked, victim, None, pairs2) - x2[victim]).mean() > 0.4
    # 2. an earlier release: release 2's seeds say nothing of release 1's pairwise masks, even with b^1 in hand
    assert np.abs(_strip(masked1[victim].masked, victim, seed1, pairs2) - x1[victim]).mean() > 0.4
    # the control: with the true release-1 seeds (which the host never gets) the same stripping recovers x^1
    truth = {u: session_pair_seed(s, victim, u, 1) for u in s.nodes if u != victim}
    assert np.abs(_strip(masked1[victim].masked, victim, seed1, truth) - x1[victim]).max() < 1e-6
    # 3. a later release: every peer refuses to mask with the victim again ...
    assert victim not in s.host.members
    with pytest.raises(ProtocolError, match="not .*members"):
        s.host.release(3, "a", DIM, participants=s.nodes)
    forged = ReleaseRequest(s.host.session_round, 3, "a", tuple(s.nodes[:9]))  # all but release 1's dropout
    for u in set(s.nodes) - {victim, s.nodes[9]}:
        with pytest.raises(ProtocolError, match="signed as dropped"):
            SessionClient.mask(s.clients[u], forged, np.zeros(DIM))
    # ... and the victim, which does not know, masks with release-3 seeds that release 2's do not open
    y3 = s.clients[victim].mask(forged, x2[victim])
    assert np.abs(_strip(y3.masked, victim, None, pairs2) - x2[victim]).mean() > 0.4
    assert victim in s.clients[s.nodes[0]].gone and s.clients[s.nodes[0]].gone[victim] == 2


def session_pair_seed(s: Session, victim: int, u: int, release: int) -> bytes:
    """The control's ground truth, read from the victim's own memory (no party but u and the victim has it)."""
    st = s.clients[victim]._session
    return pair_seed(st.agreements[u], st.scope, release, victim, u)


def test_a_survivor_list_that_brings_back_a_dropped_bank_is_refused() -> None:
    s = Session(10, releases=4)
    s.open()
    rng = np.random.default_rng(2)
    victim = s.nodes[1]
    s.release(1, "a", _inputs(s, rng), drop={victim})
    # the host leaves the victim out of the others' release 2 but lists it as a survivor when they check
    server, requests = s.host.release(2, "a", DIM)
    for u, req in requests.items():
        server.receive_masked_input(u, s.clients[u].mask(req, np.zeros(DIM)))
    others = tuple(sorted(requests))
    for u in others:
        with pytest.raises(ProtocolError, match="do not split exactly"):
            s.clients[u].sign(s.host.session_round, 2, (*others, victim), ())


def test_shares_that_fail_authentication_exclude_their_sender_at_set_up() -> None:
    s = Session(6, releases=3)
    host, bad = s.host, s.nodes[3]
    for u in s.nodes:
        host.receive_keys(u, s.clients[u].keys(host.setup))
    for u, peer_keys in host.end_keys().items():
        host.receive_shares(u, s.clients[u].share(host.session_round, peer_keys))
    for u, received in host.end_shares().items():
        if bad in received:
            forged = received[bad]
            received = {
                **received,
                bad: type(forged)(forged.round_id, forged.src, forged.dst, forged.nonce, bytes(len(forged.ciphertext))),
            }
        host.receive_accept(u, s.clients[u].accept(host.session_round, received))
    assert host.end_accept() == frozenset(s.nodes) - {bad}
    assert "failed" in host.rejections[bad]
    x = _inputs(s, np.random.default_rng(0))
    _, total = s.release(1, "b", x)
    assert np.allclose(total, sum(x[u] for u in s.nodes if u != bad), atol=1e-5)


def test_a_session_key_set_with_a_bad_signature_is_refused_naming_the_peer() -> None:
    s = Session(5, releases=2)
    host, u = s.host, s.nodes[2]
    msg = s.clients[u].keys(host.setup)
    forged = type(msg)(
        msg.session_round,
        msg.node_id,
        msg.enc_public_key,
        msg.mask_public_key,
        msg.seed_commitments[::-1],
        msg.signature,
        msg.credential,
    )
    with pytest.raises(PeerRejected, match="signature does not verify"):
        host.receive_keys(u, forged)


def test_purposes_must_share_the_graph_settings() -> None:
    with pytest.raises(ProtocolError, match="dropout_fraction"):
        SessionServer({"a": SecAggConfig(), "b": SecAggConfig(dropout_fraction=0.1)}, 1, range(5), 2)


def test_a_host_that_tells_two_groups_two_dropout_stories_gets_no_share() -> None:
    """Half the peers hear 'v survived', half 'v dropped': each group's MACs vouch for its own lists only."""
    s = Session(10, releases=2)
    s.open()
    victim, r = s.nodes[0], 1
    server, requests = s.host.release(r, "a", DIM)
    for u, request in requests.items():
        server.receive_masked_input(u, s.clients[u].mask(request, np.zeros(DIM)))
    everyone = tuple(s.nodes)
    group_a, group_b = s.nodes[:5], s.nodes[5:]  # 5 + 5, each below the threshold 6
    assert s.host.graph.threshold == 6
    stories = {u: (everyone, ()) for u in group_a} | {u: (everyone[1:], (victim,)) for u in group_b}
    macs = {u: s.clients[u].sign(s.host.session_round, r, *stories[u]) for u in s.nodes}
    for u in s.nodes:  # a MAC on other lists, or the MAC of a peer its lists call dropped: refused
        with pytest.raises(ProtocolError, match="MAC is not on the survivor lists|MAC or one of non-survivor"):
            s.clients[u].unmask(s.host.session_round, r, *stories[u], macs)
    # nor can the host vouch in a peer's place: a MAC it makes up is refused
    forged = dict(macs)
    honest = macs[group_b[0]]
    forged[group_b[0]] = type(honest)(r, group_b[0], b"", bytes(len(honest.signature)))
    u = group_b[1]
    with pytest.raises(ProtocolError, match="refused"):  # u's release is over after the failed check
        s.clients[u].unmask(s.host.session_round, r, *stories[u], forged)
    fresh = Session(10, releases=1)
    fresh.open()
    server, requests = fresh.host.release(1, "a", DIM)
    for w, request in requests.items():
        server.receive_masked_input(w, fresh.clients[w].mask(request, np.zeros(DIM)))
    checks = server.end_mask_input()
    lists = (checks[fresh.nodes[0]].survivors, checks[fresh.nodes[0]].dropped)
    macs = {w: fresh.clients[w].sign(fresh.host.session_round, 1, *lists) for w in fresh.nodes}
    target = fresh.nodes[1]
    macs[fresh.nodes[2]] = type(macs[target])(1, fresh.nodes[2], b"", bytes(len(macs[target].signature)))
    with pytest.raises(ProtocolError, match="MAC is not on the survivor lists"):
        fresh.clients[target].unmask(fresh.host.session_round, 1, *lists, macs)


def _to_unmask(s: Session, r: int, x: dict[int, np.ndarray], drop: int):
    server, requests = s.host.release(r, "a", DIM)
    for u, request in requests.items():
        if u != drop:
            server.receive_masked_input(u, s.clients[u].mask(request, x[u]))
    for u, c in server.end_mask_input().items():
        server.receive_consistency(u, s.clients[u].sign(s.host.session_round, r, c.survivors, c.dropped))
    return server, server.end_consistency()


def test_every_surviving_neighbour_of_a_dropout_must_reveal_its_seed_and_a_wrong_seed_is_caught() -> None:
    s = Session(8, releases=3)
    s.open()
    rng = np.random.default_rng(5)
    gone = s.nodes[3]
    server, asks = _to_unmask(s, 1, _inputs(s, rng), drop=gone)
    silent = s.nodes[0]
    for u, q in asks.items():
        if u != silent:
            server.receive_unmask(u, s.clients[u].unmask(s.host.session_round, 1, q.survivors, q.dropped, q.signatures))
    with pytest.raises(ThresholdNotMet, match=f"survivor {silent} did not reveal its pairwise seed"):
        server.aggregate()
    # a survivor that reveals a wrong seed: the masks do not cancel and no sum is released
    server, asks = _to_unmask(s, 2, _inputs(s, rng), drop=s.nodes[5])
    for u, q in asks.items():
        answer = s.clients[u].unmask(s.host.session_round, 2, q.survivors, q.dropped, q.signatures)
        if u == s.nodes[1]:
            answer = type(answer)(2, u, answer.seed_shares, {v: bytes(66) for v in answer.key_shares})
        server.receive_unmask(u, answer)
    with pytest.raises(ProtocolError, match="masks did not cancel"):
        server.aggregate()


class _ResumedEachCall:
    """A peer that lives in no process: before every call a fresh `SessionClient` loads the JSON of its saved state."""

    def __init__(self, node: int, configs, signer, verifier) -> None:
        self.make = lambda: SessionClient(node, configs, signer=signer, verifier=verifier)
        self.saved = json.dumps(self.make().state_dict())

    def __getattr__(self, name):
        def call(*args, **kwargs):
            client = self.make()
            client.load_state_dict(json.loads(self.saved))
            try:
                return getattr(client, name)(*args, **kwargs)
            finally:  # a refusal ends the session for the peer: that is saved too
                self.saved = json.dumps(client.state_dict())

        return call


def test_a_peer_resumed_from_its_saved_state_before_every_message_sums_exactly_and_still_refuses_replays() -> None:
    """A deployed ClientApp is a new process per message: the session must survive `state_dict` round trips."""
    s = Session(5, releases=4)
    s.clients = {u: _ResumedEachCall(u, s.configs, s.signers[u], s.verifier) for u in s.nodes}
    assert s.open() == frozenset(s.nodes)
    rng = np.random.default_rng(5)
    for r, drop in ((1, ()), (2, {s.nodes[4]})):
        x = _inputs(s, rng, CONFIGS["a"].clip)
        before = s.host.members
        _, total = s.release(r, "a", x, drop)
        expected = sum(x[u] for u in before - set(drop))
        assert total is not None
        assert np.abs(total - expected).max() <= CONFIGS["a"].encoder(5).average_error_bound(5, 1.0) * 5 + 1e-9
    # the host replays release 2's request: the resumed peer remembers it masked release 2 and refuses
    replay = ReleaseRequest(s.host.session_round, 2, "a", tuple(sorted(s.host.members)))
    with pytest.raises(ProtocolError, match="increasing order"):
        s.clients[s.nodes[0]].mask(replay, np.zeros(DIM))
    # the peer that signed node 4 dropped remembers it: a release that brings it back is refused
    back = ReleaseRequest(s.host.session_round, 3, "a", tuple(s.nodes))
    with pytest.raises(ProtocolError, match="signed as dropped"):
        s.clients[s.nodes[0]].mask(back, np.zeros(DIM))
    other = SessionClient(s.nodes[1], s.configs, signer=s.signers[s.nodes[1]], verifier=s.verifier)
    with pytest.raises(ProtocolError, match="node"):  # one peer's saved state never loads as another's
        other.load_state_dict(json.loads(s.clients[s.nodes[0]].saved))
