"""`fedsilo.peers.flower_compat.heartbeat` against Flower 1.42's own heartbeat code: short intervals are
announced, waited, accepted by the SuperLink, and a node is offline two intervals after its last one."""

import time

import flwr.supercore.heartbeat as sender
import flwr.supernode.fleet_http_connection as connection
import pytest
from flwr.superlink.servicer.fleet import fleet_handlers

from fedsilo.peers.flower_compat.heartbeat import (
    NODE_HEARTBEAT_SECONDS,
    accept_short_heartbeats,
    shorten_node_heartbeats,
)


@pytest.fixture
def restored(monkeypatch):
    for module, name in (
        (connection, "HEARTBEAT_DEFAULT_INTERVAL"),
        (sender, "HEARTBEAT_DEFAULT_INTERVAL"),
        (sender, "HEARTBEAT_CALL_TIMEOUT"),
        (fleet_handlers, "HEARTBEAT_MIN_INTERVAL"),
    ):
        monkeypatch.setattr(module, name, getattr(module, name))


def test_flower_refuses_a_five_second_heartbeat_unless_the_superlink_accepts_it(restored):
    with pytest.raises(Exception, match="out of bounds"):
        fleet_handlers._validate_heartbeat_interval(NODE_HEARTBEAT_SECONDS)
    accept_short_heartbeats()
    fleet_handlers._validate_heartbeat_interval(NODE_HEARTBEAT_SECONDS)
    with pytest.raises(Exception, match="out of bounds"):
        fleet_handlers._validate_heartbeat_interval(1.0)


def test_a_supernode_announces_and_sends_heartbeats_every_few_seconds(restored):
    shorten_node_heartbeats()
    assert connection.HEARTBEAT_DEFAULT_INTERVAL == NODE_HEARTBEAT_SECONDS
    waits = []
    beats = []

    heartbeat = sender.HeartbeatSender(lambda: beats.append(time.monotonic()) or True)
    heartbeat._stop_event.wait = lambda seconds=None: waits.append(seconds) or len(waits) > 20  # type: ignore
    heartbeat._stop_event.is_set = lambda: len(waits) > 20  # type: ignore
    heartbeat._run()
    assert len(beats) >= 20
    # (interval - call timeout) x (0.7 .. 0.9): well inside the two intervals a node stays online
    assert all(2.4 <= w <= 3.2 for w in waits), waits
    with pytest.raises(ValueError, match="must exceed"):
        shorten_node_heartbeats(1.0)
