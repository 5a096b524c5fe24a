"""Framing of the OT-extension PSI (:mod:`fedsilo.privacy.psi.kkrt`): one self-describing frame per message.

The header is the DH protocol's (:mod:`fedsilo.privacy.psi.wire`) with its own magic, so
a peer that speaks only one protocol refuses the other's frames by name. Layout
(big-endian), 32-byte header then the payload::

    magic    4   b"FPSK"
    version  1   1
    type     1   a :class:`FrameType`
    mode     1   the PSI mode (:class:`fedsilo.privacy.psi.protocol.Mode`)
    flags    1   0
    session 16   random per PSI run (the receiver's)
    seq      4   index of the frame among its type's frames
    count    4   records in the payload; in an END frame, the total sent before it
    payload      count * width bytes; the width of a record depends on the type
                 (and for MASKS on the set sizes): see :func:`decode`

:func:`decode` refuses, with :class:`~fedsilo.errors.PsiFrameError`, anything else:
a short frame, another magic or version, an unknown or unexpected type, non-zero flags,
a payload whose length is not ``count * width``, more records than the type allows.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from fedsilo.errors import PsiFrameError

__all__ = ["MAGIC", "VERSION", "HEADER", "MAX_RECORDS", "FrameType", "Frame", "encode", "decode", "pack", "unpack"]

MAGIC = b"FPSK"
VERSION = 1
_HEADER = struct.Struct(">4sBBBB16sII")
HEADER = _HEADER.size
MAX_RECORDS = 1 << 16
"""Records per element frame (at most 4 MiB of payload)."""


class FrameType(enum.IntEnum):
    """What a frame carries (``*_END`` frames close a stream and carry its total)."""

    HELLO = 1  # receiver -> sender: base-OT A, bin-hash key, |X|, bins
    REPLY = 2  # sender -> receiver: code key, |Y|, the k base-OT points B_i
    MATRIX = 3  # receiver -> sender: the OT-extension matrix U, a slice of bins (64 bytes each)
    MATRIX_END = 4
    MASKS = 5  # sender -> receiver: OPRF values of the sender's items, per hash function, shuffled
    MASKS_END = 6
    FOUND = 7  # receiver -> sender (both-sides mode): positions of the matched MASKS, u64
    FOUND_END = 8


ENDS = frozenset({FrameType.MATRIX_END, FrameType.MASKS_END, FrameType.FOUND_END})


@dataclass(frozen=True)
class Frame:
    """A decoded frame; ``payload`` is ``count * width`` bytes (empty for END frames)."""

    type: FrameType
    mode: int
    session: bytes
    seq: int
    count: int
    payload: memoryview


def encode(type_: FrameType, mode: int, session: bytes, seq: int, count: int, payload: bytes = b"") -> bytes:
    """One frame; ``count`` is the records in ``payload`` (the total for END frames)."""
    if len(session) != 16:
        raise PsiFrameError("a session id is 16 bytes")
    return _HEADER.pack(MAGIC, VERSION, type_, mode, 0, session, seq, count) + bytes(payload)


def decode(data: bytes, widths: dict[FrameType, int]) -> Frame:
    """Parse and check one frame.

    ``widths`` maps each frame type expected now to the bytes of one record (END frames:
    any value, they carry none); an element frame carries at most :data:`MAX_RECORDS`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < HEADER:
        raise PsiFrameError(f"an OT-PSI frame is at least {HEADER} bytes; the message was refused")
    magic, version, type_, mode, flags, session, seq, count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        hint = " (it is a DH-PSI frame: the peer runs the DH protocol)" if magic == b"FPSI" else ""
        raise PsiFrameError(f"not an OT-PSI frame (wrong magic){hint}; the message was refused")
    if version != VERSION:
        raise PsiFrameError(f"OT-PSI frame version {version} is not supported (this peer speaks {VERSION})")
    try:
        kind = FrameType(type_)
    except ValueError:
        raise PsiFrameError(f"unknown OT-PSI frame type {type_}; the message was refused") from None
    if kind not in widths:
        raise PsiFrameError(f"an OT-PSI {kind.name} frame arrived out of order; the message was refused")
    if flags != 0:
        raise PsiFrameError("OT-PSI frame flags must be 0; the message was refused")
    payload = len(data) - HEADER
    if kind in ENDS:
        if payload:
            raise PsiFrameError(f"an OT-PSI {kind.name} frame carries no payload; the message was refused")
    else:
        width = widths[kind]
        if count > MAX_RECORDS or payload != count * width:
            raise PsiFrameError(
                f"an OT-PSI {kind.name} frame announces {count} records but carries {payload} bytes "
                f"(each record is {width} bytes, at most {MAX_RECORDS} per frame); the message was refused"
            )
    return Frame(kind, mode, bytes(session), seq, count, memoryview(data)[HEADER:])


_LENGTH = struct.Struct(">I")


def pack(frames: list[bytes]) -> bytes:
    """Frames in one message (an HTTP body): each one after its 4-byte big-endian length.

    A frame's payload width depends on the run (MASKS: on both set sizes), so frames
    in a message are length-prefixed rather than cut by their headers.
    """
    return b"".join(_LENGTH.pack(len(frame)) + frame for frame in frames)


def unpack(data: bytes, max_frame: int = HEADER + MAX_RECORDS * 64) -> list[bytes]:
    """The frames of a :func:`pack` message; nothing is decoded (:func:`decode` checks each).

    :class:`PsiFrameError` for a message cut inside a length or a frame, or a frame
    shorter than a header or longer than ``max_frame`` bytes.
    """
    frames, at, view = [], 0, memoryview(data)
    while at < len(data):
        if len(data) - at < _LENGTH.size:
            raise PsiFrameError("an OT-PSI message ends inside a frame length; the message was refused")
        (size,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if not HEADER <= size <= max_frame:
            raise PsiFrameError(
                f"an OT-PSI message announces a frame of {size} bytes (a frame is {HEADER} to {max_frame}); "
                "the message was refused"
            )
        if at + size > len(data):
            raise PsiFrameError("an OT-PSI message ends inside a frame; the message was refused")
        frames.append(bytes(view[at : at + size]))
        at += size
    return frames
