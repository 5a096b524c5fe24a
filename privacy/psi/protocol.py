"""Diffie–Hellman private set intersection between a receiver and a sender.

Protocol (semi-honest, Huberman–Franklin–Hogg / Meadows style, in the group of the
consortium's crypto suite, :mod:`fedsilo.privacy.psi.groups`: under ``standard`` X25519,
``e^k`` is ``X25519(k, e)`` and ``H`` hashes onto Curve25519, see :mod:`fedsilo.privacy.psi.x25519`;
under ``gm`` the SM2 curve, ``e^k`` is ``k·P`` and ``H`` is RFC 9380's SSWU hash with SM3,
see :mod:`fedsilo.privacy.psi.sm2`)::

    receiver R, set X, secret a            sender S, set Y, secret b
    BLINDED    H(x)^a, x in X          ->
                                       <-  EVALUATED  H(x)^ab, same order
                                                      (shuffled in cardinality mode)
                                       <-  SET        H(y)^b, y in Y, shuffled
    R computes H(y)^ba and compares with H(x)^ab.
    CONFIRM    H(y)^ba, in SET order   ->  (both-sides mode only) S compares too.

What each side learns (both follow the protocol; DDH hard in the prime-order subgroup
of Curve25519, or on sm2p256v1 under gm; SHA-512, or SM3 under gm, a random oracle, so H
is one onto the curve):

* :attr:`Mode.TO_RECEIVER` — R learns X ∩ Y and |Y|; S learns |X|.
* :attr:`Mode.TO_BOTH` — both learn X ∩ Y, |X| and |Y|.
* :attr:`Mode.CARDINALITY` — R learns |X ∩ Y| and |Y| (S shuffles H(x)^ab, so the
  positions of matches say nothing); S learns |X|.

Sizes are those of the *distinct* identifiers: each side removes duplicates (same
canonical form, see :mod:`fedsilo.privacy.psi.identifiers`) before anything leaves it, and
reports a match at the position of an identifier's first occurrence in its input.
Neither side sees the other's identifiers or their hashes: only group elements
raised to secret exponents. Every element a side exponentiates is refused unless it
is a canonical point of the curve (not of its twist) and of large order, before its
secret touches it (:class:`ProtocolError`, naming the position only). Elements a side
only compares with its own results (EVALUATED at the receiver, CONFIRM at the sender)
are refused unless canonical and of large order; on Curve25519 they are not tested for
lying on the curve: off the curve, an element equals nothing this side computes, so it
matches nothing, as a wrong point of the curve (which a deviating peer can always send)
would. On the SM2 curve every received element is checked (compressed encoding, x < p,
on the curve; the point at infinity has no 33-byte encoding), and the cofactor is 1, so
no subgroup check is needed beyond that. A frame of the other suite's group is refused
by name (:mod:`fedsilo.privacy.psi.wire`).
A side that deviates from the protocol can learn more
(e.g. a receiver that puts a million guesses in X learns which are in Y); the
semi-honest model does not cover that, and a list holder that needs to bound such
guessing uses the query protocol with its per-querier quota (:mod:`fedsilo.privacy.psi.query`).

Usage: each side is a state machine over byte frames (:mod:`fedsilo.privacy.psi.wire`) and
never touches a socket. ``R.request_frames()`` yields the frames to send;
``handle(frame)`` on either side consumes one frame and returns the frames to send
back. :func:`exchange` wires two local objects together (tests, benchmarks, a daemon
that already has both halves in one process).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from fedsilo.errors import ProtocolError
from fedsilo.privacy.psi import groups
from fedsilo.privacy.psi.parallel import (
    Workers,
    blind_identifiers,
    blind_tasks,
    collect,
    exponentiate,
    exponentiate_tasks,
    run_streams,
)
from fedsilo.privacy.psi.wire import MAX_BATCH, Frame, FrameType, decode, encode

__all__ = ["Mode", "PsiResult", "PsiReceiver", "PsiSender", "exchange"]

_FRAME = min(8192, MAX_BATCH)  # elements per frame on the wire (256 KiB)


class Mode(enum.IntEnum):
    """Who learns what (see the module doc)."""

    TO_RECEIVER = 1
    TO_BOTH = 2
    CARDINALITY = 3


@dataclass(frozen=True)
class PsiResult:
    """What one side learned.

    ``own_size`` and ``peer_size`` count distinct identifiers; ``cardinality`` is
    |X ∩ Y| (``None`` for a side that learns no intersection); ``positions`` are, in
    ascending order, the positions in this side's input of the first occurrence of
    each identifier in the intersection (``None`` when this side learns only a count
    or nothing). ``shared_keys`` (both-sides mode only) holds, row for row with
    ``positions``, the doubly blinded element ``H(x)^ab`` of each shared identifier:
    both sides hold the same value for the same identifier and nobody can link it to
    an identifier outside the intersection, so sorting by it gives both sides one
    common order of the shared identifiers (sample alignment) without naming them.
    """

    own_size: int
    peer_size: int
    cardinality: int | None
    positions: np.ndarray | None
    shared_keys: np.ndarray | None = None


def _prefix(rows: np.ndarray) -> np.ndarray:
    """Each row's last 8 bytes as one integer: a sort key that is almost always unique.

    Elements are uniform in a group of order about 2^252 (X25519: little-endian u, whose
    top byte has a clear bit; SM2: the low bytes of the big-endian x after the sign byte),
    so equal keys of distinct elements are rare; the functions below compare full rows
    wherever keys agree.
    """
    return np.ascontiguousarray(rows[:, -8:]).view(np.uint64).ravel()


def _void(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1]))).ravel()


def _distinct(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows without repeats, in order of first occurrence, and those occurrences' positions."""
    if len(rows) == 0:
        return rows, np.empty(0, dtype=np.int64)
    keys = np.sort(_prefix(rows))
    if not (keys[1:] == keys[:-1]).any():  # no two prefixes agree: no repeats (the usual case)
        return rows, np.arange(len(rows), dtype=np.int64)
    _, first = np.unique(_void(rows), return_index=True)
    first.sort()
    return rows[first], first.astype(np.int64)


def _member(rows: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Boolean mask: which rows of ``rows`` occur in ``pool`` (exact equality of whole rows)."""
    if len(rows) == 0 or len(pool) == 0:
        return np.zeros(len(rows), dtype=bool)
    ours, theirs = _prefix(rows), _prefix(pool)
    order = np.argsort(theirs)
    keys = theirs[order]
    if not (keys[1:] == keys[:-1]).any():  # the usual case: each prefix names one row of the pool
        at = order[np.minimum(np.searchsorted(keys, ours), len(keys) - 1)]
        found = theirs[at] == ours  # same prefix: a candidate, confirmed on the full row
        found[found] = (rows[found] == pool[at[found]]).all(axis=1)
        return found
    found = np.isin(ours, theirs)  # same prefix: a candidate, confirmed on the full rows below
    if found.any():
        candidates = pool[np.isin(theirs, ours[found])]
        found[found] = np.isin(_void(rows[found]), _void(candidates))
    return found


def _shuffled(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(int.from_bytes(os.urandom(32), "big")).permutation(len(rows))
    return rows[perm], perm


def _frames(
    type_: FrameType, end: FrameType, mode: int, session: bytes, rows: np.ndarray, group: int
) -> Iterator[bytes]:
    seq = 0
    for start in range(0, len(rows), _FRAME):
        yield encode(type_, mode, session, seq, rows[start : start + _FRAME], group=group)
        seq += 1
    yield encode(end, mode, session, seq, total=len(rows), group=group)


class _Stream:
    """Reassembles one stream of element frames: order, session and totals are checked."""

    def __init__(self, name: str, width: int) -> None:
        self.name, self.seq, self.count, self.closed, self.width = name, 0, 0, False, width
        self.parts: list[np.ndarray] = []

    def add(self, frame: Frame) -> None:
        if self.closed or frame.seq != self.seq:
            raise ProtocolError(f"{self.name} frame {frame.seq} arrived out of order; the run was aborted")
        self.parts.append(np.array(frame.elements))
        self.seq += 1
        self.count += frame.count

    def end(self, frame: Frame) -> np.ndarray:
        if self.closed or frame.seq != self.seq or frame.count != self.count:
            raise ProtocolError(f"the {self.name} stream ended with a wrong total; the run was aborted")
        self.closed = True
        rows = np.concatenate(self.parts) if self.parts else np.empty((0, self.width), np.uint8)
        self.parts = []
        return rows


T = TypeVar("T")


def _ready(value: T | None) -> T:
    """A part of a side's state its protocol has set by now (its set, its session, ...).

    A frame can only reach the code that reads it after the frame that sets it (`handle`
    checks the order); ProtocolError if that ever fails, never a None used as a set.
    """
    if value is None:
        raise ProtocolError("a PSI frame arrived before the state it needs; the run was aborted")
    return value


class _Side:
    def __init__(
        self, identifiers: Iterable[str], kind: str | None, mode: Mode, workers: Workers | None, suite: str
    ) -> None:
        self._identifiers = identifiers
        self._kind = kind
        self.mode = Mode(mode)
        self._workers = workers or Workers(1)
        self.group = groups.psi_group(suite)
        self._key = self.group.random_scalar()
        self._own: np.ndarray | None = None  # H(.)^key of the distinct identifiers
        self._first: np.ndarray | None = None
        self._result: PsiResult | None = None

    def _blind_own(self) -> None:
        if self._own is None:
            self._set_own(
                blind_identifiers(self._identifiers, self._kind, self._key, self._workers, group=self.group.key)
            )

    def _set_own(self, rows: np.ndarray) -> None:
        self._identifiers = ()
        self._own, self._first = _distinct(rows)

    def _stream(self, name: str) -> _Stream:
        return _Stream(name, self.group.element_bytes)

    def _out(self, type_: FrameType, end: FrameType, rows: np.ndarray) -> Iterator[bytes]:
        return _frames(type_, end, self.mode, _ready(self.session), rows, self.group.wire)

    session: bytes | None

    def _check_frame(self, frame: Frame) -> None:
        if frame.mode != self.mode:
            theirs = Mode(frame.mode).name if frame.mode in {m.value for m in Mode} else str(frame.mode)
            raise ProtocolError(f"the peer runs PSI in mode {theirs}, this side in {self.mode.name}; agree on one mode")

    @property
    def done(self) -> bool:
        """Whether this side has its result."""
        return self._result is not None

    def result(self) -> PsiResult:
        """What this side learned; :class:`ProtocolError` before the run finished."""
        if self._result is None:
            raise ProtocolError("the PSI run has not finished on this side")
        return self._result


class PsiReceiver(_Side):
    """The side that asks: it sends its blinded set first and learns the result.

    ``identifiers``: any iterable of ``str`` (a list, a generator over a file), read
    once, in batches; with ``kind=None`` each carries its own ``kind:`` prefix.
    ``workers``: where the group operations run (default: this process only).
    ``suite``: the consortium's crypto suite, which picks the group (module doc).
    """

    def __init__(
        self,
        identifiers: Iterable[str],
        *,
        kind: str | None = "id",
        mode: Mode = Mode.TO_RECEIVER,
        workers: Workers | None = None,
        suite: str = "standard",
    ) -> None:
        super().__init__(identifiers, kind, mode, workers, suite)
        self.session: bytes | None = os.urandom(16)
        self._evaluated = self._stream("EVALUATED")
        self._set = self._stream("SET")
        self._double: np.ndarray | None = None  # H(x)^ab

    def request_frames(self) -> Iterator[bytes]:
        """Blind this side's identifiers and yield the BLINDED frames, then BLINDED_END."""
        self._blind_own()
        yield from self._out(FrameType.BLINDED, FrameType.BLINDED_END, _ready(self._own))

    def handle(self, data: bytes) -> list[bytes]:
        """Consume one frame from the sender; return the frames to send it (maybe none)."""
        if self._own is None or self.done:
            raise ProtocolError("a PSI frame arrived before the request was sent or after the run ended")
        types = {FrameType.EVALUATED, FrameType.EVALUATED_END, FrameType.SET, FrameType.SET_END}
        frame = decode(data, types, self.group.wire)
        self._check_frame(frame)
        if frame.session != self.session:
            raise ProtocolError("a PSI frame of another session arrived; the message was refused")
        if frame.type is FrameType.EVALUATED:
            self.group.check_compared(frame.elements, self._evaluated.count)  # only compared: see the module doc
            self._evaluated.add(frame)
        elif frame.type is FrameType.EVALUATED_END:
            double = self._evaluated.end(frame)
            if len(double) != len(self._own):
                raise ProtocolError("the sender evaluated a different number of elements than were sent")
            self._double = double
        elif frame.type is FrameType.SET:
            self._set.add(frame)
        else:
            if self._double is None:
                raise ProtocolError("the sender's set ended before its evaluations; the run was aborted")
            peer = exponentiate(self._set.end(frame), self._key, self._workers, group=self.group.key)
            return self._finish(self._double, peer)
        return []

    def _finish(self, double: np.ndarray, peer: np.ndarray) -> list[bytes]:
        found = _member(double, peer)
        count = int(found.sum())
        positions = None if self.mode is Mode.CARDINALITY else _ready(self._first)[found]
        keys = double[found] if self.mode is Mode.TO_BOTH else None
        self._result = PsiResult(len(_ready(self._own)), len(peer), count, positions, keys)
        if self.mode is Mode.TO_BOTH:
            return list(self._out(FrameType.CONFIRM, FrameType.CONFIRM_END, peer))
        return []


class PsiSender(_Side):
    """The side that answers: it evaluates the receiver's elements and sends its own set.

    It accepts only runs in its own ``mode`` (its policy). In :attr:`Mode.TO_BOTH` it
    learns the intersection; otherwise only the number of the receiver's distinct
    identifiers (``result().peer_size``). ``suite`` as for :class:`PsiReceiver`.
    """

    def __init__(
        self,
        identifiers: Iterable[str],
        *,
        kind: str | None = "id",
        mode: Mode = Mode.TO_RECEIVER,
        workers: Workers | None = None,
        suite: str = "standard",
    ) -> None:
        super().__init__(identifiers, kind, mode, workers, suite)
        self.session = None
        self._blinded = self._stream("BLINDED")
        self._confirm = self._stream("CONFIRM")
        self._perm: np.ndarray | None = None
        self._evaluated: np.ndarray | None = None

    def prepare(self) -> None:
        """Blind, deduplicate and shuffle this side's set now (else with the receiver's elements)."""
        if self._own is None:
            self._blind_own()
            self._shuffle_own()

    def _shuffle_own(self) -> None:
        self._own, self._perm = _shuffled(_ready(self._own))

    def handle(self, data: bytes) -> list[bytes]:
        """Consume one frame from the receiver; return the frames to send back (maybe none)."""
        if self.done:
            raise ProtocolError("a PSI frame arrived after the run ended")
        expected = (
            {FrameType.CONFIRM, FrameType.CONFIRM_END}
            if self._evaluated is not None
            else {FrameType.BLINDED, FrameType.BLINDED_END}
        )
        frame = decode(data, expected, self.group.wire)
        self._check_frame(frame)
        if self.session is None:
            self.session = frame.session
        elif frame.session != self.session:
            raise ProtocolError("a PSI frame of another session arrived; the message was refused")
        if frame.type is FrameType.BLINDED:
            self._blinded.add(frame)
            return []
        if frame.type is FrameType.CONFIRM:
            self.group.check_compared(frame.elements, self._confirm.count)  # only compared: see the module doc
            self._confirm.add(frame)
            return []
        if frame.type is FrameType.CONFIRM_END:
            return self._confirmed(self._confirm.end(frame))
        return self._evaluate(self._blinded.end(frame))

    def _evaluate(self, blinded: np.ndarray) -> list[bytes]:
        if len(_distinct(blinded)[0]) != len(blinded):
            raise ProtocolError("the receiver sent repeated elements; the run was aborted")
        processes = self._workers.processes
        key, width = self.group.key, self.group.element_bytes
        own = (
            () if self._own is not None else blind_tasks(self._identifiers, self._kind, self._key, processes, group=key)
        )
        mine, theirs = run_streams(self._workers, own, exponentiate_tasks(blinded, self._key, processes, group=key))
        if self._own is None:  # blinded in the same pass over the workers as the receiver's elements
            self._set_own(collect(mine, width))
            self._shuffle_own()
        evaluated = collect(theirs, width)
        if self.mode is Mode.CARDINALITY:
            evaluated, _ = _shuffled(evaluated)
        self._evaluated = evaluated
        own_set = _ready(self._own)
        out = list(self._out(FrameType.EVALUATED, FrameType.EVALUATED_END, evaluated))
        out += self._out(FrameType.SET, FrameType.SET_END, own_set)
        if self.mode is not Mode.TO_BOTH:
            self._result = PsiResult(len(own_set), len(blinded), None, None)
        return out

    def _confirmed(self, peer_double: np.ndarray) -> list[bytes]:
        own, evaluated = _ready(self._own), _ready(self._evaluated)
        if len(peer_double) != len(own):
            raise ProtocolError("the receiver confirmed a different number of elements than were sent")
        found = _member(peer_double, evaluated)
        positions = _ready(self._first)[_ready(self._perm)[found]]
        order = np.argsort(positions)
        self._result = PsiResult(
            len(own), len(evaluated), int(found.sum()), positions[order], peer_double[found][order]
        )
        return []


class Party(Protocol):
    """One side of a PSI run: this module's classes and :mod:`fedsilo.privacy.psi.kkrt`'s."""

    @property
    def done(self) -> bool: ...

    def handle(self, data: bytes) -> list[bytes]: ...


class Requester(Party, Protocol):
    """The side that starts a run."""

    def request_frames(self) -> Iterator[bytes]: ...


def exchange(receiver: Requester, sender: Party, tap: Callable[[str, bytes], None] | None = None) -> None:
    """Run a PSI between two local objects (of either protocol); ``tap(direction, frame)`` sees every frame.

    ``direction`` is ``"to_sender"`` or ``"to_receiver"``.
    """

    def to_sender(frame: bytes) -> None:
        if tap:
            tap("to_sender", frame)
        for reply in sender.handle(frame):
            if tap:
                tap("to_receiver", reply)
            for back in receiver.handle(reply):
                to_sender(back)

    for frame in receiver.request_frames():
        to_sender(frame)
    if not (receiver.done and sender.done):
        raise ProtocolError("the PSI run ended before both sides finished")
