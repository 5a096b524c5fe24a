"""Messages survive to_dict/from_dict with Flower-record-friendly value types."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.errors import ProtocolError
from fedsilo.privacy.secagg import (
    AdvertiseKeys,
    ConsistencyRequest,
    MaskedInput,
    MaskInputRequest,
    RoundSetup,
    ShareKeysRequest,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskShares,
)
from fedsilo.privacy.secagg.messages import encrypted_shares_from_dict, encrypted_shares_to_dict

from ._harness import Harness

ALLOWED = (int, bytes, str, np.ndarray)


def _flat(d):
    for v in d.values():
        if isinstance(v, list):
            assert all(isinstance(x, (int, bytes, str)) for x in v)
        else:
            assert isinstance(v, ALLOWED), type(v)


def test_round_trip_through_dicts_still_aggregates_correctly():
    h = Harness(5, dim=16, seed=14)
    s = RoundSetup.from_dict(h.server.setup.to_dict())
    for u in h.nodes:
        adv = h.clients[u].advertise_keys(s.round_id, s.participants, s.round_seed)
        d = adv.to_dict()
        _flat(d)
        h.server.receive_advertise(u, AdvertiseKeys.from_dict(d))
    reqs = h.server.end_advertise()
    for u, req in reqs.items():
        d = req.to_dict()
        _flat(d)
        req = ShareKeysRequest.from_dict(d)
        out = h.clients[u].share_keys(req.round_id, req.peer_keys)
        d = encrypted_shares_to_dict(out)
        _flat(d)
        h.server.receive_shares(u, encrypted_shares_from_dict(d))
    reqs = h.server.end_share_keys()
    for u, req in reqs.items():
        d = req.to_dict()
        _flat(d)
        req = MaskInputRequest.from_dict(d)
        msg = h.clients[u].mask_input(req.round_id, h.inputs[u], h.weights[u], req.shares)
        d = msg.to_dict()
        _flat(d)
        h.server.receive_masked_input(u, MaskedInput.from_dict(d))
    reqs = h.server.end_mask_input()
    for u, req in reqs.items():
        d = req.to_dict()
        _flat(d)
        req = ConsistencyRequest.from_dict(d)
        msg = h.clients[u].sign_survivors(req.round_id, req.survivors, req.dropped)
        d = msg.to_dict()
        _flat(d)
        h.server.receive_consistency(u, SurvivorSignature.from_dict(d))
    reqs = h.server.end_consistency()
    for u, req in reqs.items():
        d = req.to_dict()
        _flat(d)
        req = UnmaskRequest.from_dict(d)
        msg = h.clients[u].unmask(req.round_id, req.survivors, req.dropped, req.signatures)
        d = msg.to_dict()
        _flat(d)
        h.server.receive_unmask(u, UnmaskShares.from_dict(d))
    h.check_exact(h.server.aggregate())


def test_malformed_dicts_raise_protocol_errors():
    with pytest.raises(ProtocolError, match="missing field 'node_id'"):
        AdvertiseKeys.from_dict({"round_id": 1})
    with pytest.raises(ProtocolError, match="type"):
        UnmaskRequest.from_dict({"round_id": "1", "survivors": [], "dropped": []})
    with pytest.raises(ProtocolError, match="line up"):
        UnmaskShares.from_dict(
            {
                "round_id": 1,
                "node_id": 2,
                "seed_share_ids": [1, 2],
                "seed_shares": [b"x"],
                "key_share_ids": [],
                "key_shares": [],
            }
        )
