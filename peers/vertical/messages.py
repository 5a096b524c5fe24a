"""The messages of split learning, as plain arrays with a byte form (the network version sends these bytes).

- :class:`BatchRequest` (label holder → feature party): a batch id and the batch's
  positions in the agreed order of shared customers, and whether it is a training batch
  (a gradient will follow) or a scoring one.
- :class:`Embeddings` (feature party → label holder): one row per position, the party's
  released bottom-model outputs.
- :class:`Gradients` (label holder → feature party): one row per position, the released
  gradients of the loss with respect to those outputs.
- :class:`Codes` (feature party → label holder, the coded scheme): one integer code in
  0 … k−1 per position, each released once by k-ary randomized response
  (:mod:`fedsilo.peers.vertical.coded`); the scheme's request is a :class:`BatchRequest`.

No message carries an identifier, a column name or a label: positions are indices in an
order both parties derived from PSI elements, values are released (clipped and noised
when private) vectors. Decoding checks the framing; the receiving party checks the
content against what it asked (:func:`check_rows`). Every refusal is a ProtocolError or
a DataError naming the party.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np

from fedsilo.errors import DataError, ProtocolError

__all__ = ["BatchRequest", "Codes", "Embeddings", "Gradients", "check_codes", "check_rows"]

_HEADER = struct.Struct(">4sBQII")  # magic, version, batch id, rows, width
_VERSION = 1
_NAME = struct.Struct(">H")


@dataclass(frozen=True)
class BatchRequest:
    """The label holder asks for the rows at ``positions`` (agreed order) of batch ``batch``."""

    batch: int
    positions: np.ndarray
    training: bool = True

    def to_bytes(self) -> bytes:
        positions = np.ascontiguousarray(self.positions, dtype=">u4")
        return (
            struct.pack(">4sBQ?I", b"FSVB", _VERSION, self.batch, self.training, len(positions)) + positions.tobytes()
        )

    @classmethod
    def from_bytes(cls, frame: bytes) -> BatchRequest:
        head = struct.calcsize(">4sBQ?I")
        if len(frame) < head:
            raise ProtocolError(f"a batch request is at least {head} bytes; got {len(frame)}")
        magic, version, batch, training, count = struct.unpack_from(">4sBQ?I", frame)
        if magic != b"FSVB" or version != _VERSION or len(frame) != head + 4 * count:
            raise ProtocolError("not a well-formed version-1 batch request: refused")
        return cls(batch, np.frombuffer(frame, ">u4", offset=head).astype(np.int64), bool(training))


@dataclass(frozen=True)
class _PartyRows:
    """Released rows of one batch of one party, framed as magic, version, batch id, shape, party name, float32s."""

    _MAGIC: ClassVar[bytes]
    _WHAT: ClassVar[str]

    party: str
    batch: int
    values: np.ndarray

    def to_bytes(self) -> bytes:
        name = self.party.encode()
        rows, width = self.values.shape
        return (
            _HEADER.pack(self._MAGIC, _VERSION, self.batch, rows, width)
            + _NAME.pack(len(name))
            + name
            + np.ascontiguousarray(self.values, dtype="<f4").tobytes()
        )

    @classmethod
    def from_bytes(cls, frame: bytes) -> Self:
        what = cls._WHAT
        if len(frame) < _HEADER.size + _NAME.size:
            raise ProtocolError(f"a {what} frame is at least {_HEADER.size + _NAME.size} bytes; got {len(frame)}")
        got, version, batch, rows, width = _HEADER.unpack_from(frame)
        if got != cls._MAGIC or version != _VERSION:
            raise ProtocolError(f"not a version-{_VERSION} {what} frame: refused")
        (length,) = _NAME.unpack_from(frame, _HEADER.size)
        start = _HEADER.size + _NAME.size + length
        if len(frame) != start + 4 * rows * width:
            raise ProtocolError(
                f"a {what} frame of {rows}×{width} values has {len(frame) - start} payload bytes: refused"
            )
        party = frame[_HEADER.size + _NAME.size : start].decode(errors="replace")
        values = np.frombuffer(frame, dtype="<f4", offset=start).reshape(rows, width).astype(np.float32)
        return cls(party, batch, values)


@dataclass(frozen=True)
class Embeddings(_PartyRows):
    """A feature party's released bottom-model outputs for one batch, row for row with its positions."""

    _MAGIC: ClassVar[bytes] = b"FSVE"
    _WHAT: ClassVar[str] = "embeddings"


@dataclass(frozen=True)
class Gradients(_PartyRows):
    """The label holder's released gradients of the loss w.r.t. one party's embeddings of one batch."""

    _MAGIC: ClassVar[bytes] = b"FSVG"
    _WHAT: ClassVar[str] = "gradients"


def check_rows(values: np.ndarray, rows: int, width: int, who: str, what: str) -> np.ndarray:
    """``values`` as float32 if it is a finite ``rows`` × ``width`` array; DataError naming ``who`` otherwise."""
    values = np.asarray(values)
    if values.shape != (rows, width):
        raise DataError(f"{who} sent {what} of shape {values.shape}; the batch needs ({rows}, {width}): refused")
    if not np.isfinite(values).all():
        raise DataError(f"{who} sent {what} with NaN or infinite values: refused")
    return values.astype(np.float32)


@dataclass(frozen=True)
class Codes:
    """A feature party's released codes (0 … ``k`` − 1) for the positions of batch ``batch``, row for row.

    Framed as magic ``FSVC``, version, batch id, rows, k, party name, then one
    big-endian uint16 per row. Decoding checks the framing only; the receiver checks
    the content (:func:`check_codes`).
    """

    party: str
    batch: int
    k: int
    codes: np.ndarray

    _MAGIC: ClassVar[bytes] = b"FSVC"

    def to_bytes(self) -> bytes:
        name = self.party.encode()
        codes = np.asarray(self.codes)
        if codes.ndim != 1 or not np.issubdtype(codes.dtype, np.integer) or (codes.size and codes.min() < 0):
            raise DataError(f"{self.party}: codes are a 1-D array of integers ≥ 0")
        return (
            _HEADER.pack(self._MAGIC, _VERSION, self.batch, len(codes), self.k)
            + _NAME.pack(len(name))
            + name
            + np.ascontiguousarray(codes, dtype=">u2").tobytes()
        )

    @classmethod
    def from_bytes(cls, frame: bytes) -> Codes:
        if len(frame) < _HEADER.size + _NAME.size:
            raise ProtocolError(f"a codes frame is at least {_HEADER.size + _NAME.size} bytes; got {len(frame)}")
        got, version, batch, rows, k = _HEADER.unpack_from(frame)
        if got != cls._MAGIC or version != _VERSION:
            raise ProtocolError(f"not a version-{_VERSION} codes frame: refused")
        (length,) = _NAME.unpack_from(frame, _HEADER.size)
        start = _HEADER.size + _NAME.size + length
        if len(frame) != start + 2 * rows:
            raise ProtocolError(f"a codes frame of {rows} codes has {len(frame) - start} payload bytes: refused")
        party = frame[_HEADER.size + _NAME.size : start].decode(errors="replace")
        return cls(party, batch, k, np.frombuffer(frame, dtype=">u2", offset=start).astype(np.int64))


def check_codes(codes: np.ndarray, rows: int, k: int, who: str) -> np.ndarray:
    """``codes`` as int64 if it is ``rows`` integers in 0 … ``k`` − 1; DataError naming ``who`` otherwise."""
    codes = np.asarray(codes)
    if codes.shape != (rows,):
        raise DataError(f"{who} sent codes of shape {codes.shape}; the batch needs ({rows},): refused")
    if not np.issubdtype(codes.dtype, np.integer):
        if not np.isfinite(codes).all():
            raise DataError(f"{who} sent codes with NaN or infinite values: refused")
        if (codes != np.round(codes)).any():
            raise DataError(f"{who} sent codes that are not whole numbers: refused")
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        raise DataError(f"{who} sent a code outside 0 … {k - 1}: refused")
    return codes.astype(np.int64)
