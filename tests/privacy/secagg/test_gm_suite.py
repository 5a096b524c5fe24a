"""SecAgg+ under the gm crypto suite: SM2-curve ECDH, the SM3 KDF, SM4-GCM shares, SM3
commitments, SM4-CTR masks and SM2-signed advertisements, end to end at the protocol level.

Written from the side of the host, which relays every message: it sees only the sum,
and whatever it relays from the other suite is refused by name.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fedsilo.errors import ConfigError, ProtocolError
from fedsilo.privacy.secagg import SecAggConfig
from fedsilo.privacy.secagg import keys as K
from fedsilo.privacy.secagg.auth import SuiteIdentity

from ._harness import CONFIG, ROUND, Harness


def _gm(n: int, dim: int = 24, seed: int = 0) -> Harness:
    return Harness(n, dim=dim, seed=seed, suite="gm")


def test_keys_commitments_and_signatures_are_the_gm_suites():
    h = _gm(4)
    h.advertise()
    adv = h.server._adverts[h.nodes[0]]
    assert len(adv.enc_public_key) == len(adv.mask_public_key) == 65 and adv.enc_public_key[0] == 4
    assert isinstance(h.signers[h.nodes[0]], SuiteIdentity) and h.signers[h.nodes[0]].suite.name == "gm"
    share_key = K.share_key(bytes(32), session=b"", round_id=ROUND, src=1, dst=2, suite=h.config.crypto)
    assert len(share_key) == 16  # SM4's key size


@pytest.mark.parametrize(
    "drops",
    [
        {},
        {"advertise": 1},
        {"share": 1},
        {"mask": 2},
        {"advertise": 1, "mask": 1, "unmask": 1},
    ],
)
def test_exact_weighted_average_with_dropouts(drops):
    h = _gm(8, seed=5)
    order = list(h.nodes)
    plan, taken = {}, 0
    for stage in ("advertise", "share", "mask", "unmask"):
        count = drops.get(stage, 0)
        plan[stage] = order[taken : taken + count]
        taken += count
    result = h.run(plan)
    gone_before_mask = set(plan["advertise"]) | set(plan["share"])
    assert set(result.survivors) == set(h.nodes) - gone_before_mask - set(plan["mask"])
    assert set(plan["mask"]) <= set(result.dropped)
    h.check_exact(result)


def test_a_dropped_peers_masks_are_removed_with_its_sm2_mask_key():
    """A peer that shared keys and then dropped: the host rebuilds its SM2 scalar from the shares,
    checks it against the advertised point, and strips its pairwise masks; its input stays hidden."""
    h = _gm(6, seed=7)
    h.advertise()
    h.share()
    gone = h.nodes[3]
    h.mask(drop=[gone])
    result = h.unmask()
    assert result.dropped == (gone,)
    h.check_exact(result)


def test_round_through_checkpoints_is_exact_under_gm():
    h = _gm(5, seed=9)
    for stage in ("advertise", "share", "mask"):
        getattr(h, stage)()
        for u, client in list(h.clients.items()):
            fresh = h.make_client(u)
            fresh.load_state_dict(json.loads(json.dumps(client.state_dict())))
            h.clients[u] = fresh
    h.check_exact(h.unmask())


def test_a_standard_suite_key_relayed_to_a_gm_peer_is_refused_by_name():
    h = _gm(5, seed=3)
    h.advertise()
    victim, v = h.nodes[0], h.nodes[1]
    _, x25519 = K.agreement_keypair()  # the standard suite's
    forged = dict(h.requests[victim].peer_keys)
    forged[v] = dataclasses.replace(forged[v], mask_public_key=x25519)
    with pytest.raises(ProtocolError, match=f"peer {v} advertised an invalid key \\(gm suite: .* not 32 bytes"):
        h.clients[victim].share_keys(ROUND, forged)


def test_the_host_refuses_a_standard_suite_advertisement_in_a_gm_round():
    h = _gm(6, seed=4)
    bad = h.nodes[2]
    _, x25519 = K.agreement_keypair()
    h.advertise(tamper=lambda u, m: dataclasses.replace(m, enc_public_key=x25519) if u == bad else m)
    assert "advertised an invalid enc_public_key (gm suite" in h.refused[bad].reason
    h.share()
    h.mask()
    result = h.unmask()
    assert bad not in result.survivors
    h.check_exact(result)


def test_a_gm_peer_refuses_an_advertisement_from_a_standard_suite_peer():
    """A peer configured with the other suite (a misconfigured member, or a host mixing two
    consortia): its whole advertisement is refused by the gm peers, naming the suite."""
    h = _gm(5, seed=6)
    h.advertise()
    victim, v = h.nodes[0], h.nodes[1]
    standard = Harness(5, dim=24, seed=6)  # the same node ids, the standard suite
    foreign = standard.clients[v].advertise_keys(ROUND, h.nodes, h.server.setup.round_seed)
    forged = dict(h.requests[victim].peer_keys)
    forged[v] = foreign
    with pytest.raises(
        ProtocolError, match="gm suite: an agreement public key \\(ECDH on the SM2 curve.*\\) is 65 bytes, not 32"
    ):
        h.clients[victim].share_keys(ROUND, forged)


def test_transcripts_are_versioned_per_suite():
    """The same keys signed under the standard suite's transcript do not verify in a gm round."""
    h = _gm(5, seed=8)
    h.advertise()
    victim, v = h.nodes[0], h.nodes[1]
    adv = h.requests[victim].peer_keys[v]
    fields = dict(
        session=h.config.session_id,
        round_id=ROUND,
        node_id=v,
        enc_public_key=adv.enc_public_key,
        mask_public_key=adv.mask_public_key,
        seed_commitment=adv.seed_commitment,
        credential=adv.credential,
    )
    standard_transcript = K.advertise_transcript(**fields)
    gm_transcript = K.advertise_transcript(**fields, suite=h.config.crypto)
    assert standard_transcript != gm_transcript and b"fedsilo/secagg/v1/gm/advertise|" in gm_transcript
    forged = dict(h.requests[victim].peer_keys)
    forged[v] = dataclasses.replace(adv, signature=h.signers[v].sign(standard_transcript))
    with pytest.raises(ProtocolError, match=f"advertised keys of peer {v} carry an invalid signature"):
        h.clients[victim].share_keys(ROUND, forged)


def test_unknown_suite_refused_in_the_config():
    with pytest.raises(ConfigError, match="secagg suite must be one of standard, gm, got 'sm9'"):
        dataclasses.replace(CONFIG, suite="sm9")
    assert SecAggConfig().suite == "standard"


def test_masks_are_full_width_from_the_os_csprng():
    """Two gm rounds with the same inputs and round seed give unrelated masked vectors."""
    uploads = []
    for _ in range(2):
        h = _gm(4, dim=64, seed=11)
        h.advertise()
        h.share()
        first = h.nodes[0]
        req = h.requests[first]
        uploads.append(h.clients[first].mask_input(req.round_id, h.inputs[first], h.weights[first], req.shares).masked)
    assert np.mean(uploads[0] == uploads[1]) < 0.05
