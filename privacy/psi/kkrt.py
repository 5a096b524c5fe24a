"""OT-extension private set intersection (KKRT16), beside the DH protocol: a few AES calls per item.

Protocol: Kolesnikov, Kumaresan, Rosulek and Trieu, "Efficient batched oblivious PRF with
applications to private set intersection", CCS 2016 (KKRT16), semi-honest. The receiver
R places its distinct items in ``m`` cuckoo bins (:mod:`fedsilo.privacy.psi.cuckoo`,
three hash functions, the item in bin ``j`` tagged with the function ``i`` that put it
there); one batched OPRF gives R, per bin, ``F_j(x || i)`` and the sender S a key for
every ``F_j``; S sends, for each of its items ``y`` and each ``i``, ``F_{h_i(y)}(y || i)``,
shuffled per ``i``; R compares::

    receiver R, set X                              sender S, set Y
    HELLO   A = aG (base OT), bin-hash key, |X|, m  ->
                                                <-  REPLY  code key, |Y|, B_i (base-OT replies, i < k)
    base OTs (R sends seeds (k_i0, k_i1), S chooses with the bits of a random s in {0,1}^k):
    D = rows C(x || i) of the occupied bins (random rows elsewhere), C the code below
    MATRIX  columns u^i = G(k_i0) + G(k_i1) + d^i   ->  q^i = G(k_{i,s_i}) + s_i u^i, i.e. rows
                                                        q_j = t_j + (C(x_j || i_j) AND s), t^i = G(k_i0)
                                                <-  MASKS  H(q_{h_i(y)} + (C(y || i) AND s)), each i, shuffled
    R: H(t_j) for each occupied bin j, looked up among the MASKS of its i.
    FOUND   positions of the matched MASKS      ->  (both-sides mode only) S learns them too.

``+`` is XOR. ``G`` is AES-128-CTR keyed by a seed (the PRG); the code ``C`` is a
pseudorandom code of ``k = 512`` bits: ``C(d || i)`` is the four AES blocks
``AES_c(d xor (4 i + b + 1))``, ``b < 4``, of the item's 16-byte digest ``d`` under the
sender's random key ``c``. KKRT16 needs any two codewords of the run to differ in at
least ``κ = 128`` bits: two 512-bit pseudorandom strings differ in fewer with probability
below ``2^-96`` (Chernoff), so below ``2^-48`` over the ``3 |X| |Y|`` pairs of a
10M × 10M run; 512 bits keep whole AES blocks. ``H`` is BLAKE2b (as the random oracle of
libOTe's and SecretFlow's KKRT), modelled as a random oracle (the paper needs it
correlation robust), truncated to ``w = max(8, ceil((40 + log2(|X| |Y|)) / 8))`` bytes,
so a false match anywhere in the run has probability at most ``2^-40``. The item digest
``d`` is BLAKE2b-128 of the canonical form (:mod:`fedsilo.privacy.psi.identifiers`),
personalized ``"fedsilo/kkrt/v1"`` (collisions among ``2^32`` items: below ``2^-64``).
Base OTs: Chou–Orlandi on ristretto255 (:mod:`fedsilo.privacy.psi.ot`). Parameters:
computational security 128 bits (AES-128, ristretto255, 512 base OTs for the 512-bit
code), statistical security 40 bits (the mask width, the code distance, the cuckoo
table of 1.27 n + 64 bins, redrawn on failure).

What each side learns (both follow the protocol; AES a PRP/PRF, BLAKE2b and SHA-256
random oracles, CDH in ristretto255):

* :attr:`Mode.TO_RECEIVER` — R learns X ∩ Y and |Y|; S learns |X| (and nothing of the
  bins: the matrix ``U`` it sees is one-time-padded by ``G(k_{i, 1 - s_i})``).
  The MASKS of S's items outside X are pseudorandom to R: a mask is a hash of a
  512-bit string that differs from anything R can compute in at least 128 unknown bits
  of ``s`` (the code's distance), so R cannot link it to an item it did not hold.
* :attr:`Mode.TO_BOTH` — both learn X ∩ Y, |X| and |Y|; ``PsiResult.shared_keys`` are the
  matched masks, equal on both sides for the same identifier.
* :attr:`Mode.CARDINALITY` is not offered: R, which decodes the OPRF, would learn which
  of its items matched. A cardinality-only run uses the DH protocol
  (:mod:`fedsilo.privacy.psi.protocol`).

Sizes, duplicates and positions follow the DH protocol: each side removes duplicates
(same canonical form) first and reports a match at the position of an identifier's
first occurrence. A side that deviates can learn more (see the DH module doc).

Usage: the DH protocol's: ``R.request_frames()`` yields the first frame, ``handle(frame)``
on either side consumes one frame and returns the frames to send back;
:func:`fedsilo.privacy.psi.protocol.exchange` runs both local objects. ``stream(frame)`` is
``handle`` as an iterator: it yields each frame as soon as it is computed, so a transport that
sends them as they come keeps both parties busy at once (the receiver expands the next chunk of
the matrix while the sender turns the last into masks). Frames:
:mod:`fedsilo.privacy.psi.otwire`; every frame is checked (:class:`PsiFrameError`). Everything
runs in the calling process (numpy and AES-NI; no worker pool).

Streaming and memory: every step runs :data:`CHUNK` items or bins at a time. The receiver
expands, transposes and sends the matrix a chunk of bins at a time (a PRG column is read at an
offset, AES-CTR from the chunk's counter), keeping of each bin only its output ``H(t_j)``; it
matches each MASKS frame as it arrives and never holds the sender's masks. The sender turns each
chunk of MATRIX frames into its rows ``q_j`` as they arrive and at once into the masks of every
pair (item, hash function) whose bin the chunk holds, written at their place in the shuffled order
(position ``k`` of group ``i`` is item ``perm_i[k]``, each ``perm_i`` drawn when the HELLO arrives:
the same distribution as shuffling whole groups); the rows are dropped chunk by chunk and the masks
go out after MATRIX_END, in that order (nothing of a mask's bin shows in when or where it is sent).
What a side holds is per item: its digests and bin positions, the receiver's outputs, the sender's
``3 |Y|`` masks (kept in :attr:`Mode.TO_BOTH` for ``PsiResult.shared_keys``). Results do not depend
on :data:`CHUNK`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import struct
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

from fedsilo.errors import PsiError, PsiFrameError
from fedsilo.privacy.psi import cuckoo, ot
from fedsilo.privacy.psi.identifiers import canonical_forms
from fedsilo.privacy.psi.otwire import MAX_RECORDS, Frame, FrameType, decode, encode
from fedsilo.privacy.psi.protocol import Mode, PsiResult, _distinct

__all__ = [
    "ITEM_DOMAIN",
    "CODE_BITS",
    "HELLO_BYTES",
    "KkrtReceiver",
    "KkrtSender",
    "CHUNK",
    "hello_items",
    "item_digests",
    "mask_bytes",
]

ITEM_DOMAIN = b"fedsilo/kkrt/v1"  # BLAKE2b personalization: at most 16 bytes
CODE_BITS = 512
_CODE = CODE_BITS // 8
_POINT = 32
_HELLO = struct.Struct(">32s16sQQ")
HELLO_BYTES = _HELLO.size
_REPLY_HEAD = struct.Struct(">16sQ")
_MATRIX_SLICE = 8192  # bins per MATRIX frame (512 KiB)
CHUNK = 1 << 16
"""Items or bins handled at once: identifiers hashed, bins of the OT extension expanded and transposed (a
multiple of :data:`_MATRIX_SLICE`), masks computed and sent. Results do not depend on it (a test runs
several); it bounds each step's working memory to a few MiB beyond the per-item arrays."""
_MAX_ITEMS = 1 << 32
_RETRIES = 8

T = TypeVar("T")


def _ready(value: T | None) -> T:
    """A part of a side's state its protocol has set by now (its set, the peer's size, ...).

    ``handle`` checks the order of frames, so a frame only reaches the code that reads a part
    after the frame that sets it; :class:`PsiFrameError` if that ever fails, never a None used.
    """
    if value is None:
        raise PsiFrameError("an OT-PSI frame arrived before the state it needs; the run was aborted")
    return value


def mask_bytes(receiver_items: int, sender_items: int) -> int:
    """Width of a mask: ``max(8, ceil((40 + log2(|X| |Y|)) / 8))`` bytes (see the module doc)."""
    bits = 40 + math.ceil(math.log2(receiver_items * sender_items + 1))
    return max(8, math.ceil(bits / 8))


def hello_items(frame: Frame) -> int:
    """The receiver's number of distinct items announced in a decoded HELLO frame (what a holder's quota counts)."""
    if frame.type is not FrameType.HELLO or len(frame.payload) != _HELLO.size:
        raise PsiFrameError("an OT-PSI run starts with one HELLO frame; the message was refused")
    return int(_HELLO.unpack_from(frame.payload)[2])


def item_digests(identifiers: Iterable[str], kind: str | None) -> np.ndarray:
    """``(n, 16)`` item digests: BLAKE2b-128 of each canonical form, personalized with :data:`ITEM_DOMAIN`.

    Reads ``identifiers`` once, :data:`CHUNK` at a time, so no list of all canonical forms is held.
    """
    forms = canonical_forms(identifiers, kind)
    parts = []
    fresh = hashlib.blake2b(digest_size=16, person=ITEM_DOMAIN)
    while batch := list(itertools.islice(forms, CHUNK)):
        out: list[bytes] = []
        append, copy = out.append, fresh.copy
        for form in batch:
            h = copy()
            h.update(form)
            append(h.digest())
        parts.append(b"".join(out))
    return np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(-1, 16)


def _codewords(key: bytes, items: np.ndarray, function: np.ndarray) -> np.ndarray:
    """``C(d || i)``: ``(n, 64)`` codewords of the digests tagged with their hash function."""
    tweaks = np.zeros((len(items), 4, 16), dtype=np.uint8)
    tweaks[:, :, 15] = (4 * function.astype(np.uint8))[:, None] + np.arange(1, 5, dtype=np.uint8)[None, :]
    return ot.aes_ecb(key, items[:, None, :] ^ tweaks).reshape(-1, _CODE)


def _oprf(rows: np.ndarray, width: int) -> np.ndarray:
    """``H`` of every 64-byte row, ``width`` bytes each."""
    data = np.ascontiguousarray(rows).tobytes()
    return np.frombuffer(_hash_each(hashlib.blake2b(digest_size=width), data, _CODE), dtype=np.uint8).reshape(-1, width)


def _hash_each(fresh: hashlib.blake2b, data: bytes, size: int) -> bytes:
    """The digests, end to end, of each ``size``-byte piece of ``data``, each hashed by a copy of ``fresh``
    (copying a set-up hash costs less than setting one up per piece)."""
    out: list[bytes] = []
    append, copy = out.append, fresh.copy
    for at in range(0, len(data), size):
        h = copy()
        h.update(data[at : at + size])
        append(h.digest())
    return b"".join(out)


def _prefix(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows[:, :8]).view("<u8").ravel()


class _Index:
    """The receiver's outputs of one hash function, to look incoming masks up in as they arrive."""

    def __init__(self, pool: np.ndarray) -> None:
        self._pool = pool
        keys = _prefix(pool)
        self._order = np.argsort(keys)
        self._keys = keys[self._order]
        self._rows: dict[bytes, int] | None = None
        if (self._keys[1:] == self._keys[:-1]).any():  # two outputs share 8 bytes: rare, look up whole rows
            self._rows = {row.tobytes(): i for i, row in enumerate(pool)}

    def find(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The positions in ``rows`` equal to an output, and that output's index in the pool."""
        if len(rows) == 0 or len(self._pool) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        if self._rows is not None:
            pairs = [(k, self._rows.get(row.tobytes(), -1)) for k, row in enumerate(rows)]
            got = np.array([pair for pair in pairs if pair[1] >= 0], dtype=np.int64).reshape(-1, 2)
            return got[:, 0], got[:, 1]
        ours = _prefix(rows)
        at = np.minimum(np.searchsorted(self._keys, ours), len(self._keys) - 1)
        hit = self._keys[at] == ours
        candidates = np.flatnonzero(hit)
        which = self._order[at[candidates]]
        same = (rows[candidates] == self._pool[which]).all(axis=1)
        return candidates[same], which[same]


def _bits(data: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")


class _Side:
    def __init__(self, identifiers: Iterable[str], kind: str | None, mode: Mode) -> None:
        self.mode = Mode(mode)
        if self.mode is Mode.CARDINALITY:
            raise PsiError(
                "the OT-extension PSI cannot give a cardinality only (its receiver decodes which items matched); "
                "run a cardinality-only PSI with the DH protocol"
            )
        self._identifiers, self._kind = identifiers, kind
        self._own: np.ndarray | None = None
        self._first: np.ndarray | None = None
        self._result: PsiResult | None = None
        self.session: bytes | None = None
        self._seq = 0
        self._records = 0

    def _hash_own(self) -> np.ndarray:
        """This side's distinct item digests, hashed on the first call."""
        if self._own is None:
            self._own, self._first = _distinct(item_digests(self._identifiers, self._kind))
            self._identifiers = ()
            if len(self._own) >= _MAX_ITEMS:
                raise PsiError(f"a PSI set holds at most {_MAX_ITEMS - 1} distinct identifiers")
        return self._own

    def _decode(self, data: bytes, widths: dict[FrameType, int]) -> Frame:
        if self.done:
            raise PsiFrameError("an OT-PSI frame arrived after the run ended")
        frame = decode(data, widths)
        if frame.mode != self.mode:
            theirs = Mode(frame.mode).name if frame.mode in {m.value for m in Mode} else str(frame.mode)
            raise PsiFrameError(f"the peer runs PSI in mode {theirs}, this side in {self.mode.name}; agree on one mode")
        if self.session is not None and frame.session != self.session:
            raise PsiFrameError("an OT-PSI frame of another session arrived; the message was refused")
        return frame

    def _stream(self, frame: Frame, end: FrameType, expected_total: int, exact: bool = True) -> bool:
        """Check one frame of a stream of ``expected_total`` records (at most, unless ``exact``):
        ``True`` at its (correct) end."""
        name = end.name.removesuffix("_END")
        if frame.seq != self._seq:
            raise PsiFrameError(f"{frame.type.name} frame {frame.seq} arrived out of order; the run was aborted")
        self._seq += 1
        if frame.type is end:
            if frame.count != self._records or (exact and self._records != expected_total):
                raise PsiFrameError(
                    f"the {name} stream ended with {frame.count} records announced and {self._records} sent, "
                    f"{expected_total} expected; the run was aborted"
                )
            self._seq = self._records = 0
            return True
        self._records += frame.count
        if self._records > expected_total:
            raise PsiFrameError(f"the {name} stream carries more than the {expected_total} records expected")
        return False

    def _frames(self, type_: FrameType, end: FrameType, rows: np.ndarray) -> Iterator[bytes]:
        seq = 0
        for start in range(0, len(rows), MAX_RECORDS):
            part = rows[start : start + MAX_RECORDS]
            yield encode(type_, self.mode, _ready(self.session), seq, len(part), part.tobytes())
            seq += 1
        yield encode(end, self.mode, _ready(self.session), seq, len(rows))

    def stream(self, data: bytes) -> Iterator[bytes]:
        raise NotImplementedError

    def handle(self, data: bytes) -> list[bytes]:
        """Consume one frame from the peer; return the frames to send back (maybe none)."""
        return list(self.stream(data))

    @property
    def done(self) -> bool:
        """Whether this side has its result."""
        return self._result is not None

    def result(self) -> PsiResult:
        """What this side learned; :class:`PsiError` before the run finished."""
        if self._result is None:
            raise PsiError("the PSI run has not finished on this side")
        return self._result


class KkrtReceiver(_Side):
    """The side that asks and learns the intersection (see the module doc).

    ``identifiers``: any iterable of ``str``, read once; with ``kind=None`` each carries
    its own ``kind:`` prefix. ``mode``: :attr:`Mode.TO_RECEIVER` or :attr:`Mode.TO_BOTH`.
    """

    def __init__(self, identifiers: Iterable[str], *, kind: str | None = "id", mode: Mode = Mode.TO_RECEIVER) -> None:
        super().__init__(identifiers, kind, mode)
        self.session = self._id = os.urandom(16)
        self._ot: ot.OtSender | None = None
        self._table: tuple[np.ndarray, np.ndarray] | None = None
        self._outputs: np.ndarray | None = None  # H(t_j) of the occupied bins, bin order
        self._items: np.ndarray | None = None  # the item in each occupied bin
        self._functions: np.ndarray | None = None  # the hash function that put it there
        self._peer_size: int | None = None
        self._indexes: list[tuple[np.ndarray, _Index]] | None = None  # per hash function: its outputs, indexed
        self._match: np.ndarray | None = None  # per output: the position of the equal mask, or -1

    def request_frames(self) -> Iterator[bytes]:
        """Hash and place this side's identifiers; yield the HELLO frame."""
        if self._ot is not None:
            raise PsiError("this PSI receiver already sent its request")
        own = self._hash_own()
        self._bins = cuckoo.bins_for(len(own))
        for _ in range(_RETRIES):
            self._bin_key = os.urandom(16)
            table = cuckoo.place(cuckoo.bin_indices(self._bin_key, own, self._bins), self._bins)
            if table is not None:
                break
        else:
            raise PsiError(f"the cuckoo table did not settle in {_RETRIES} tries; this should not happen, report it")
        self._table = table
        self._ot = ot.OtSender()
        hello = _HELLO.pack(self._ot.first, self._bin_key, len(own), self._bins)
        yield encode(FrameType.HELLO, self.mode, self._id, 0, 1, hello)

    def stream(self, data: bytes) -> Iterator[bytes]:
        """Consume one frame from the sender; yield the frames to send it (maybe none) as they are computed.

        A transport that sends each frame as it comes lets the sender work on the first
        MATRIX frames while this side computes the next ones; exhaust the iterator before
        passing the next frame. :meth:`handle` is the same as a list.
        """
        if self._ot is None:
            raise PsiFrameError("an OT-PSI frame arrived before the request was sent")
        if self._peer_size is None:
            frame = self._decode(data, {FrameType.REPLY: _REPLY_HEAD.size + CODE_BITS * _POINT})
            if frame.count != 1:
                raise PsiFrameError("an OT-PSI REPLY carries one record")
            yield from self._extend(frame.payload)
            return
        peer_size = self._peer_size
        width = mask_bytes(len(_ready(self._own)), peer_size)
        frame = self._decode(data, {FrameType.MASKS: width, FrameType.MASKS_END: 0})
        if not self._stream(frame, FrameType.MASKS_END, cuckoo.HASHES * peer_size):
            self._look_up(np.frombuffer(frame.payload, dtype=np.uint8).reshape(-1, width), self._records - frame.count)
            return
        yield from self._finish()

    def _extend(self, payload: memoryview) -> Iterator[bytes]:
        """The OT extension, :data:`CHUNK` bins at a time: each chunk's MATRIX frames, then its outputs."""
        code_key, peer_size = _REPLY_HEAD.unpack_from(payload)
        if peer_size >= _MAX_ITEMS:
            raise PsiFrameError(f"the sender announces {peer_size} items, more than a PSI set holds")
        points = bytes(payload[_REPLY_HEAD.size :])
        own = _ready(self._own)
        zero, one = _ready(self._ot).seeds([points[at : at + _POINT] for at in range(0, len(points), _POINT)])
        occupant, function = _ready(self._table)
        used = occupant >= 0
        self._items, self._functions = occupant[used], function[used]
        self._peer_size = int(peer_size)
        self._table = None
        width_out = mask_bytes(len(own), self._peer_size)
        outputs, seq = [], 0
        for start in range(0, self._bins, CHUNK):
            stop = min(start + CHUNK, self._bins)
            mine = used[start:stop]
            rows = np.empty((stop - start, _CODE), dtype=np.uint8)
            here = occupant[start:stop][mine]
            rows[mine] = _codewords(code_key, own[here], function[start:stop][mine])
            rows[~mine] = np.frombuffer(os.urandom(int((~mine).sum()) * _CODE), dtype=np.uint8).reshape(-1, _CODE)
            columns = ot.transpose(rows)  # (k, chunk / 8): column i of the codewords
            t = np.stack([ot.prg(seed, (stop - start) // 8, start // 8) for seed in zero])
            columns ^= t
            for i, seed in enumerate(one):
                columns[i] ^= ot.prg(seed, (stop - start) // 8, start // 8)
            for at in range(0, stop - start, _MATRIX_SLICE):
                part = columns[:, at // 8 : (at + _MATRIX_SLICE) // 8]
                yield encode(FrameType.MATRIX, self.mode, self._id, seq, part.shape[1] * 8, part.tobytes())
                seq += 1
            outputs.append(_oprf(ot.transpose(t)[mine], width_out))
        yield encode(FrameType.MATRIX_END, self.mode, self._id, seq, self._bins)
        pool = np.concatenate(outputs) if outputs else np.empty((0, width_out), np.uint8)
        self._outputs = pool
        owners = [np.flatnonzero(self._functions == i) for i in range(cuckoo.HASHES)]
        self._indexes = [(mine, _Index(pool[mine])) for mine in owners]
        self._match = np.full(len(pool), -1, dtype=np.int64)

    def _look_up(self, masks: np.ndarray, offset: int) -> None:
        """Match the masks at positions ``offset...`` of the sender's stream against this side's outputs."""
        peer_size, indexes, match = _ready(self._peer_size), _ready(self._indexes), _ready(self._match)
        stop = offset + len(masks)
        for i in range(offset // peer_size, (stop - 1) // peer_size + 1) if len(masks) else ():
            first, last = max(offset, i * peer_size), min(stop, (i + 1) * peer_size)
            mine, index = indexes[i]
            at, which = index.find(masks[first - offset : last - offset])
            match[mine[which]] = first + at

    def _finish(self) -> Iterator[bytes]:
        items, outputs, match = _ready(self._items), _ready(self._outputs), _ready(self._match)
        peer_size = _ready(self._peer_size)
        self._indexes = None
        hit = match >= 0
        positions = _ready(self._first)[items[hit]]
        order = np.argsort(positions)
        keys = outputs[hit][order] if self.mode is Mode.TO_BOTH else None
        self._result = PsiResult(len(_ready(self._own)), peer_size, int(hit.sum()), positions[order], keys)
        if self.mode is Mode.TO_BOTH:
            found = np.sort(match[hit]).astype(">u8").view(np.uint8).reshape(-1, 8)
            yield from self._frames(FrameType.FOUND, FrameType.FOUND_END, found)


class KkrtSender(_Side):
    """The side that answers: it learns |X| only, or the intersection in :attr:`Mode.TO_BOTH`.

    It accepts only runs in its own ``mode`` (its policy).
    """

    def __init__(self, identifiers: Iterable[str], *, kind: str | None = "id", mode: Mode = Mode.TO_RECEIVER) -> None:
        super().__init__(identifiers, kind, mode)
        self._peer_size: int | None = None
        self._columns: list[np.ndarray] = []
        self._pending = 0  # bins in self._columns
        self._filled = 0  # bins expanded so far
        self._by_bin: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (item, i) pairs by bin h_i(item)
        self._all_masks: np.ndarray | None = None  # every mask, in sending order, filled as bins arrive
        self._answered = False
        self._masks: np.ndarray | None = None
        self._perms: np.ndarray | None = None
        self._found: list[np.ndarray] = []

    def prepare(self) -> None:
        """Hash and deduplicate this side's set now (else when the request arrives)."""
        self._hash_own()

    def stream(self, data: bytes) -> Iterator[bytes]:
        """Consume one frame from the receiver; yield the frames to send back (maybe none) as they are computed.

        The MASKS come :data:`CHUNK` at a time, so a transport that sends each as it comes lets the
        receiver match them while this side computes the next; exhaust the iterator before passing
        the next frame. :meth:`handle` is the same as a list.
        """
        if self._peer_size is None:
            frame = self._decode(data, {FrameType.HELLO: _HELLO.size})
            if frame.count != 1:
                raise PsiFrameError("an OT-PSI HELLO carries one record")
            yield self._hello(frame)
            self._plan()  # after the reply is out: the receiver expands its matrix meanwhile
            return
        if not self._answered:
            frame = self._decode(data, {FrameType.MATRIX: _CODE, FrameType.MATRIX_END: 0})
            if frame.type is FrameType.MATRIX and (frame.count % 64 or frame.count > _MATRIX_SLICE):
                raise PsiFrameError(f"an OT-PSI MATRIX frame carries a multiple of 64 bins, at most {_MATRIX_SLICE}")
            if not self._stream(frame, FrameType.MATRIX_END, self._bins):
                self._columns.append(np.frombuffer(frame.payload, dtype=np.uint8).reshape(CODE_BITS, -1))
                self._pending += frame.count
                if self._pending >= CHUNK:
                    self._expand()
                return
            self._expand()
            self._answered = True
            yield from self._answer()
            return
        frame = self._decode(data, {FrameType.FOUND: 8, FrameType.FOUND_END: 0})
        peer_size = self._peer_size
        if not self._stream(frame, FrameType.FOUND_END, min(peer_size, len(_ready(self._own))), exact=False):
            self._found.append(np.frombuffer(frame.payload, dtype=">u8").astype(np.int64))
            return
        self._confirmed(np.concatenate(self._found) if self._found else np.empty(0, np.int64))

    def _hello(self, frame: Frame) -> bytes:
        first, self._bin_key, peer_size, bins = _HELLO.unpack_from(frame.payload)
        if peer_size >= _MAX_ITEMS or bins != cuckoo.bins_for(peer_size):
            raise PsiFrameError(
                f"the receiver announces {peer_size} items in {bins} bins; "
                f"this protocol uses {cuckoo.bins_for(min(peer_size, _MAX_ITEMS))}"
            )
        self.session, self._peer_size, self._bins = frame.session, int(peer_size), int(bins)
        own = self._hash_own()
        secret = os.urandom(_CODE)
        self._s = np.frombuffer(secret, dtype=np.uint8)
        self._choose = _bits(secret).astype(bool)
        receiver = ot.OtReceiver(first, _bits(secret))
        self._seeds = receiver.seeds
        self._code_key = os.urandom(16)
        reply = _REPLY_HEAD.pack(self._code_key, len(own)) + b"".join(receiver.replies)
        return encode(FrameType.REPLY, self.mode, frame.session, 0, 1, reply)

    def _plan(self) -> None:
        """Draw the shuffle and sort the ``3 |Y|`` pairs (item, hash function) by bin, so that each chunk of
        rows, once expanded, gives the masks of the pairs whose bin it holds (see :meth:`_expand`)."""
        own, n = _ready(self._own), len(_ready(self._own))
        rng = np.random.default_rng(int.from_bytes(os.urandom(32), "big"))
        self._perms = perms = np.stack([rng.permutation(n) for _ in range(cuckoo.HASHES)])
        place = np.empty_like(perms)  # place[i, item]: the item's position in group i
        np.put_along_axis(place, perms, np.arange(n)[None, :], axis=1)
        pair_bins = cuckoo.bin_indices(self._bin_key, own, self._bins).T.ravel()  # pair i n + item
        order = np.argsort(pair_bins, kind="stable")
        self._by_bin = (order, pair_bins[order], place.ravel())
        self._all_masks = np.empty((cuckoo.HASHES * n, mask_bytes(_ready(self._peer_size), n)), dtype=np.uint8)

    def _expand(self) -> None:
        """The rows ``q_j = t_j + (C(x_j || i_j) AND s)`` of the bins received since the last call, and at
        once the masks ``H(q_{h_i(y)} + (C(y || i) AND s))`` of every pair (y, i) with its bin among them."""
        if not self._columns:
            return
        u = np.concatenate(self._columns, axis=1)
        start, count = self._filled, self._pending
        self._columns, self._pending = [], 0
        q = np.stack([ot.prg(seed, count // 8, start // 8) for seed in self._seeds])
        q[self._choose] ^= u[self._choose]
        rows = ot.transpose(q)
        self._filled += count
        order, sorted_bins, place = _ready(self._by_bin)
        own, masks = _ready(self._own), _ready(self._all_masks)
        n = len(own)
        low, high = np.searchsorted(sorted_bins, [start, start + count])
        for at in range(low, high, MAX_RECORDS):
            pairs = order[at : min(at + MAX_RECORDS, high)]
            function, item = np.divmod(pairs, n)
            code = _codewords(self._code_key, own[item], function.astype(np.uint8))
            got = _oprf(rows[sorted_bins[at : at + len(pairs)] - start] ^ (code & self._s), masks.shape[1])
            masks[function * n + place[pairs]] = got

    def _answer(self) -> Iterator[bytes]:
        """The MASKS (all computed by now): position ``i |Y| + k`` carries ``F(y || i)`` of the item
        ``y = Y[perm_i[k]]``, each ``perm_i`` a random permutation (the shuffle of the module doc)."""
        masks, n, peer_size = _ready(self._all_masks), len(_ready(self._own)), _ready(self._peer_size)
        self._by_bin = self._all_masks = None
        if self.mode is Mode.TO_BOTH:
            self._masks = masks
        else:
            self._result = PsiResult(n, peer_size, None, None)
        yield from self._frames(FrameType.MASKS, FrameType.MASKS_END, masks)

    def _confirmed(self, found: np.ndarray) -> None:
        masks = _ready(self._masks)
        total = len(masks)
        if len(found) and (found[0] < 0 or found[-1] >= total or (np.diff(found) <= 0).any()):
            raise PsiFrameError(f"FOUND positions must increase strictly and lie below {total}; the run was aborted")
        n = len(_ready(self._own))
        items = _ready(self._perms)[found // n, found % n] if n else found
        if len(np.unique(items)) != len(items):
            raise PsiFrameError("FOUND names one identifier twice; the run was aborted")
        positions = _ready(self._first)[items]
        order = np.argsort(positions)
        self._result = PsiResult(n, _ready(self._peer_size), len(found), positions[order], masks[found][order])
