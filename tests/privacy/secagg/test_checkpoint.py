"""A client resumed from its checkpoint at every stage gives the same exact result.

A Flower ClientApp is stateless between messages: the client mod stores
`SecAggClient.state_dict()` in the node's `context.state` and rebuilds the client for
the next stage. This runs a round that way, through JSON, with a dropout.
"""

import json

import pytest

from fedsilo.errors import ProtocolError
from fedsilo.privacy.secagg import SecAggClient

from ._harness import Harness


def _reload(harness: Harness) -> None:
    for u, client in list(harness.clients.items()):
        state = json.loads(json.dumps(client.state_dict()))
        fresh = harness.make_client(u)
        fresh.load_state_dict(state)
        harness.clients[u] = fresh


def test_round_through_checkpoints_is_exact():
    h = Harness(6, dim=50)
    h.advertise()
    _reload(h)
    h.share()
    _reload(h)
    h.mask(drop=[h.nodes[0]])
    _reload(h)
    result = h.unmask()
    assert set(result.survivors) == set(h.nodes[1:])
    h.check_exact(result)


def test_checkpoint_of_another_peer_is_refused():
    h = Harness(4)
    h.advertise()
    state = h.clients[h.nodes[0]].state_dict()
    with pytest.raises(ProtocolError, match="checkpoint belongs to peer"):
        SecAggClient(h.nodes[1], h.config).load_state_dict(state)


def test_resumed_client_still_refuses_a_replayed_stage():
    h = Harness(4)
    h.advertise()
    h.share()
    _reload(h)
    u = h.nodes[0]
    with pytest.raises(ProtocolError, match="expected stage"):
        h.clients[u].share_keys(h.server.round_id, {})
