"""Error types of the secure-aggregation protocol.

Both derive from :class:`fedsilo.errors.ProtocolError`, so a caller that only knows the
project's error types can catch them as such.
"""

from __future__ import annotations

from fedsilo.errors import ProtocolError

__all__ = ["PeerRejected", "ThresholdNotMet", "ProtocolError"]


class PeerRejected(ProtocolError):
    """A message from one peer was refused; that peer is dropped from the round.

    ``peer`` is the node id of the offending peer and ``reason`` says what was wrong.
    The server's state stays consistent: the round continues with the other peers as
    long as the threshold allows (the caller catches this, logs it and carries on).
    """

    def __init__(self, peer: int, reason: str) -> None:
        self.peer = peer
        self.reason = reason
        super().__init__(f"peer {peer}: {reason}; the peer is dropped from this round")


class ThresholdNotMet(ProtocolError):
    """Too few peers remain to finish the round safely; the round is aborted.

    Raised before anything is unmasked: the server issues no unmask request and
    reconstructs no secret once this has been raised.
    """
