"""Framing of PSI and query messages: every message is one self-describing frame.

Layout (big-endian), 32-byte header then the payload::

    magic    4   b"FPSI"
    version  1   2 (version 1 carried ristretto255 PSI elements; it is refused)
    type     1   a :class:`FrameType`
    mode     1   the PSI mode (0 for query frames)
    flags    1   0
    session 16   random per PSI run; for query frames u64 epoch || 8 bytes of the list id hash
    seq      4   index of the frame among its type's frames
    count    4   elements in the payload; in an END frame, the total sent before it
    payload      count * 32 bytes (element frames), empty (END frames)

:func:`decode` refuses, with :class:`ProtocolError`, anything else: a short or long
frame, another magic or version, an unknown type, a payload whose length is not
``count * 32``, a batch larger than :data:`MAX_BATCH`. Element bytes are checked by
the group operations: PSI frames carry X25519 u-coordinates
(:mod:`fedsilo.privacy.psi.x25519`), query frames ristretto255 encodings
(:mod:`fedsilo.privacy.psi.group`). Version 2 changed PSI elements from ristretto255 to
X25519; both frame families carry the one version, so peers upgrade together.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import ProtocolError
from fedsilo.privacy.psi.group import ELEMENT_BYTES
from fedsilo.privacy.psi.otwire import MAGIC as OT_MAGIC

__all__ = ["MAGIC", "VERSION", "MAX_BATCH", "HEADER", "FrameType", "Frame", "encode", "decode", "split"]

MAGIC = b"FPSI"
VERSION = 2
_RETIRED = {1: "ristretto255 PSI elements"}
MAX_BATCH = 1 << 16
_HEADER = struct.Struct(">4sBBBB16sII")
HEADER = _HEADER.size


class FrameType(enum.IntEnum):
    """What a frame carries (``*_END`` frames close a stream and carry its total)."""

    BLINDED = 1  # receiver -> sender: H(x)^a
    BLINDED_END = 2
    EVALUATED = 3  # sender -> receiver: H(x)^ab
    EVALUATED_END = 4
    SET = 5  # sender -> receiver: H(y)^b, shuffled
    SET_END = 6
    CONFIRM = 7  # receiver -> sender (both-sides mode): H(y)^ba, in the SET order
    CONFIRM_END = 8
    QUERY = 9  # querier -> holder: H(q)^r
    ANSWER = 10  # holder -> querier: H(q)^rk


_ENDS = {FrameType.BLINDED_END, FrameType.EVALUATED_END, FrameType.SET_END, FrameType.CONFIRM_END}


@dataclass(frozen=True)
class Frame:
    """A decoded frame; ``elements`` is a read-only ``(count, 32)`` view (empty for END)."""

    type: FrameType
    mode: int
    session: bytes
    seq: int
    count: int
    elements: np.ndarray


def encode(
    type_: FrameType, mode: int, session: bytes, seq: int, elements: np.ndarray | None = None, total: int | None = None
) -> bytes:
    """One frame: ``elements`` (``(n, 32)`` uint8) for element frames, ``total`` for END frames."""
    if len(session) != 16:
        raise ProtocolError("a session id is 16 bytes")
    if type_ in _ENDS:
        return _HEADER.pack(MAGIC, VERSION, type_, mode, 0, session, seq, int(total or 0))
    if elements is None or elements.dtype != np.uint8 or elements.shape[1:] != (ELEMENT_BYTES,):
        raise ProtocolError(f"an element frame carries a uint8 array of shape (n, {ELEMENT_BYTES})")
    if len(elements) > MAX_BATCH:
        raise ProtocolError(f"a frame carries at most {MAX_BATCH} elements")
    return _HEADER.pack(MAGIC, VERSION, type_, mode, 0, session, seq, len(elements)) + elements.tobytes()


def decode(data: bytes, expected: set[FrameType] | None = None) -> Frame:
    """Parse and check one frame (see the module doc); ``expected`` limits the types accepted."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < HEADER:
        raise ProtocolError(f"a frame is at least {HEADER} bytes; the message was refused")
    magic, version, type_, mode, flags, session, seq, count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        hint = " (it is an OT-extension PSI frame: the peer runs the OT protocol)" if magic == OT_MAGIC else ""
        raise ProtocolError(f"not a fedsilo DH-PSI frame (wrong magic){hint}; the message was refused")
    if version in _RETIRED:
        raise ProtocolError(
            f"the peer speaks PSI frame version {version} ({_RETIRED[version]}), which this peer "
            f"no longer accepts (it speaks version {VERSION}, X25519); upgrade fedsilo on the peer"
        )
    if version != VERSION:
        raise ProtocolError(
            f"PSI frame version {version} is not supported (this peer speaks {VERSION}); upgrade fedsilo"
        )
    try:
        kind = FrameType(type_)
    except ValueError:
        raise ProtocolError(f"unknown PSI frame type {type_}; the message was refused") from None
    if expected is not None and kind not in expected:
        raise ProtocolError(f"a {kind.name} frame arrived out of order; the message was refused")
    if flags != 0:
        raise ProtocolError("PSI frame flags must be 0; the message was refused")
    payload = len(data) - HEADER
    if kind in _ENDS:
        if payload:
            raise ProtocolError(f"a {kind.name} frame carries no payload; the message was refused")
        elements = np.empty((0, ELEMENT_BYTES), dtype=np.uint8)
    else:
        if count > MAX_BATCH or payload != count * ELEMENT_BYTES:
            raise ProtocolError(
                f"a {kind.name} frame announces {count} elements but carries {payload} bytes "
                f"(each element is {ELEMENT_BYTES} bytes, at most {MAX_BATCH} per frame); the message was refused"
            )
        elements = np.frombuffer(data, dtype=np.uint8, count=payload, offset=HEADER).reshape(count, ELEMENT_BYTES)
    return Frame(kind, mode, bytes(session), seq, count, elements)


def split(data: bytes) -> list[bytes]:
    """Cut a concatenation of frames (one HTTP body) back into frames; nothing is decoded.

    Each frame's length follows from its header (END frames carry no payload). A cut
    frame at the end, or a header announcing more than :data:`MAX_BATCH` elements, is
    refused with :class:`ProtocolError`; :func:`decode` checks each frame's content.
    """
    frames, at, view = [], 0, memoryview(data)
    while at < len(data):
        if len(data) - at < HEADER:
            raise ProtocolError("the message ends inside a frame header; the message was refused")
        type_, count = data[at + 5], _HEADER.unpack_from(data, at)[7]
        ends = type_ in {int(t) for t in _ENDS}
        if not ends and count > MAX_BATCH:
            raise ProtocolError(f"a frame announces {count} elements, more than {MAX_BATCH}; the message was refused")
        size = HEADER + (0 if ends else count * ELEMENT_BYTES)
        if at + size > len(data):
            raise ProtocolError("the message ends inside a frame; the message was refused")
        frames.append(bytes(view[at : at + size]))
        at += size
    return frames
