"""Node heartbeats every few seconds, so the SuperLink notices a dead SuperNode in seconds, not a minute.

Flower 1.42's SuperNode tells the SuperLink it is alive with a heartbeat carrying its
interval (`HEARTBEAT_DEFAULT_INTERVAL`, 30 s), sent every (interval −
`HEARTBEAT_CALL_TIMEOUT`) × 0.7-0.9; the SuperLink keeps the node online until
`HEARTBEAT_PATIENCE` (2) intervals after the last one, and only accepts intervals of
at least `HEARTBEAT_MIN_INTERVAL` (10 s). Once the node is offline, the SuperLink
answers a pull of the replies to messages sent to that node with an error reply
(`ErrorCode.NODE_UNAVAILABLE`, made up by the SuperLink: its source is node 0), and
leaves the node out of `Grid.get_node_ids()`. That is what lets a ServerApp drop a dead
peer; with Flower's defaults it takes up to 60 s.

`shorten_node_heartbeats` (in the SuperNode's process) rebinds those constants in the
two modules that read them at call time, `flwr.supernode.fleet_http_connection`
(the interval it announces at activation and with every heartbeat) and
`flwr.supercore.heartbeat` (how long it waits between heartbeats);
`accept_short_heartbeats` (in the SuperLink's process) rebinds the lower bound
`flwr.superlink.servicer.fleet.fleet_handlers` checks. With `NODE_HEARTBEAT_SECONDS`
= 5 a SuperNode heartbeats every 2.5-3.2 s and is offline 10 s after its last one.
The bound is not lower on purpose: a live SuperNode training on a loaded 2-core host
must not miss two heartbeats in a row, or it is dropped from its round.

Would go with: a heartbeat-interval option of `flower-supernode` and a matching
minimum of `flower-superlink`.
"""

from __future__ import annotations

NODE_HEARTBEAT_SECONDS = 5.0
HEARTBEAT_CALL_SECONDS = 1.5  # subtracted from the interval before each wait (Flower: 5 s of a 30 s interval)


def shorten_node_heartbeats(interval: float = NODE_HEARTBEAT_SECONDS) -> None:
    """Make this process's SuperNode announce, and keep, `interval`-second heartbeats."""
    import flwr.supercore.heartbeat as sender
    import flwr.supernode.fleet_http_connection as connection

    if interval <= HEARTBEAT_CALL_SECONDS:
        raise ValueError(f"a heartbeat interval must exceed {HEARTBEAT_CALL_SECONDS} s, got {interval}")
    connection.HEARTBEAT_DEFAULT_INTERVAL = interval  # type: ignore[attr-defined]  # read per call
    sender.HEARTBEAT_DEFAULT_INTERVAL = interval  # type: ignore[attr-defined]
    sender.HEARTBEAT_CALL_TIMEOUT = HEARTBEAT_CALL_SECONDS  # type: ignore[attr-defined]


def accept_short_heartbeats(minimum: float = NODE_HEARTBEAT_SECONDS) -> None:
    """Make this process's SuperLink accept heartbeat intervals from `minimum` seconds on."""
    from flwr.superlink.servicer.fleet import fleet_handlers

    fleet_handlers.HEARTBEAT_MIN_INTERVAL = minimum  # type: ignore[attr-defined]  # read per request
