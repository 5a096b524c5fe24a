"""Framing of PSI and query messages: every message is one self-describing frame.

Layout (big-endian), 32-byte header then the payload::

    magic    4   b"FPSI"
    version  1   2 or 3 (version 1 carried ristretto255 PSI elements; it is refused)
    type     1   a :class:`FrameType`
    mode     1   the PSI mode (0 for query frames)
    group    1   version 3: the group of the elements, 0 = Curve25519 (the standard suite:
                 X25519 for PSI, ristretto255 for the query), 1 = SM2 curve (the gm suite);
                 version 2: 0 (the byte was reserved as "flags"; a version 2 frame is group 0)
    session 16   random per PSI run; for query frames u64 epoch || 8 bytes of the list id hash
    seq      4   index of the frame among its type's frames
    count    4   elements in the payload; in an END frame, the total sent before it
    payload      count * width bytes: 32 for group 0, 33 (compressed points) for group 1

Frames of group 0 are written as version 2, byte for byte what fedsilo wrote before the gm
suite existed, so a standard-suite peer that has not upgraded still reads them; SM2 frames
are version 3, which such a peer refuses as a version it does not speak.

:func:`decode` refuses, with :class:`ProtocolError`, anything else: a short or long
frame, another magic or version, an unknown type, a frame of another group than the one
this side runs (naming both: the consortium's members disagree on the suite), a payload
whose length is not ``count * width``, a batch larger than :data:`MAX_BATCH`. Element bytes
are checked by the group operations (:mod:`fedsilo.privacy.psi.groups`).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import ProtocolError
from fedsilo.privacy.psi.groups import WIDTHS, WIRE_CURVE25519, WIRE_NAMES
from fedsilo.privacy.psi.otwire import MAGIC as OT_MAGIC

__all__ = ["MAGIC", "VERSION", "MAX_BATCH", "HEADER", "FrameType", "Frame", "encode", "decode", "split"]

MAGIC = b"FPSI"
VERSION = 3
_CURVE25519_VERSION = 2  # what group-0 frames are written as (see the module doc)
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
    """A decoded frame; ``elements`` is a read-only ``(count, width)`` view (empty for END)."""

    type: FrameType
    mode: int
    session: bytes
    seq: int
    count: int
    elements: np.ndarray
    group: int = WIRE_CURVE25519


def encode(
    type_: FrameType,
    mode: int,
    session: bytes,
    seq: int,
    elements: np.ndarray | None = None,
    total: int | None = None,
    group: int = WIRE_CURVE25519,
) -> bytes:
    """One frame of ``group``: ``elements`` (``(n, width)`` uint8) for element frames, ``total`` for END frames."""
    if len(session) != 16:
        raise ProtocolError("a session id is 16 bytes")
    if group not in WIDTHS:
        raise ProtocolError(f"unknown PSI group {group}")
    version = _CURVE25519_VERSION if group == WIRE_CURVE25519 else VERSION
    if type_ in _ENDS:
        return _HEADER.pack(MAGIC, version, type_, mode, group, session, seq, int(total or 0))
    width = WIDTHS[group]
    if elements is None or elements.dtype != np.uint8 or elements.shape[1:] != (width,):
        raise ProtocolError(f"an element frame of {WIRE_NAMES[group]} carries a uint8 array of shape (n, {width})")
    if len(elements) > MAX_BATCH:
        raise ProtocolError(f"a frame carries at most {MAX_BATCH} elements")
    return _HEADER.pack(MAGIC, version, type_, mode, group, session, seq, len(elements)) + elements.tobytes()


def decode(data: bytes, expected: set[FrameType] | None = None, group: int = WIRE_CURVE25519) -> Frame:
    """Parse and check one frame of ``group`` (see the module doc); ``expected`` limits the types accepted."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < HEADER:
        raise ProtocolError(f"a frame is at least {HEADER} bytes; the message was refused")
    magic, version, type_, mode, theirs, session, seq, count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        hint = " (it is an OT-extension PSI frame: the peer runs the OT protocol)" if magic == OT_MAGIC else ""
        raise ProtocolError(f"not a fedsilo DH-PSI frame (wrong magic){hint}; the message was refused")
    if version in _RETIRED:
        raise ProtocolError(
            f"the peer speaks PSI frame version {version} ({_RETIRED[version]}), which this peer "
            f"no longer accepts (it speaks versions {_CURVE25519_VERSION} and {VERSION}); upgrade fedsilo on the peer"
        )
    if version not in (_CURVE25519_VERSION, VERSION):
        raise ProtocolError(
            f"PSI frame version {version} is not supported (this peer speaks {VERSION}); upgrade fedsilo"
        )
    try:
        kind = FrameType(type_)
    except ValueError:
        raise ProtocolError(f"unknown PSI frame type {type_}; the message was refused") from None
    if expected is not None and kind not in expected:
        raise ProtocolError(f"a {kind.name} frame arrived out of order; the message was refused")
    if version == _CURVE25519_VERSION and theirs != WIRE_CURVE25519:
        raise ProtocolError("a version 2 PSI frame has group byte 0 (Curve25519); the message was refused")
    if theirs != group:
        raise ProtocolError(
            f"the peer sent PSI elements of the {WIRE_NAMES.get(theirs, f'unknown group {theirs}')}, this peer "
            f"runs the {WIRE_NAMES[group]}: the two peers disagree on the consortium's crypto suite; the "
            "message was refused"
        )
    width = WIDTHS[group]
    payload = len(data) - HEADER
    if kind in _ENDS:
        if payload:
            raise ProtocolError(f"a {kind.name} frame carries no payload; the message was refused")
        elements = np.empty((0, width), dtype=np.uint8)
    else:
        if count > MAX_BATCH or payload != count * width:
            raise ProtocolError(
                f"a {kind.name} frame announces {count} elements but carries {payload} bytes "
                f"(each element is {width} bytes, at most {MAX_BATCH} per frame); the message was refused"
            )
        elements = np.frombuffer(data, dtype=np.uint8, count=payload, offset=HEADER).reshape(count, width)
    return Frame(kind, mode, bytes(session), seq, count, elements, group)


def split(data: bytes) -> list[bytes]:
    """Cut a concatenation of frames (one HTTP body) back into frames; nothing is decoded.

    Each frame's length follows from its header (END frames carry no payload; the group byte
    gives the element width, an unknown group is refused by :func:`decode`). A cut
    frame at the end, or a header announcing more than :data:`MAX_BATCH` elements, is
    refused with :class:`ProtocolError`; :func:`decode` checks each frame's content.
    """
    frames, at, view = [], 0, memoryview(data)
    while at < len(data):
        if len(data) - at < HEADER:
            raise ProtocolError("the message ends inside a frame header; the message was refused")
        type_, group, count = data[at + 5], data[at + 7], _HEADER.unpack_from(data, at)[7]
        ends = type_ in {int(t) for t in _ENDS}
        if not ends and count > MAX_BATCH:
            raise ProtocolError(f"a frame announces {count} elements, more than {MAX_BATCH}; the message was refused")
        size = HEADER + (0 if ends else count * WIDTHS.get(group, 32))
        if at + size > len(data):
            raise ProtocolError("the message ends inside a frame; the message was refused")
        frames.append(bytes(view[at : at + size]))
        at += size
    return frames
