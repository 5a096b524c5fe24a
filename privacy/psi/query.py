"""Anonymous query (keyword PIR with labels) against a list holder's encrypted table.

Per key epoch the holder, with secret scalar ``k``, publishes a table of its list
(identifier ``y`` with label ``ℓ``, e.g. a risk grade, a flag, an amount)::

    e_y        = H(y)^k                                 (never published as such)
    tag || key = HKDF-SHA256(ikm=e_y, info="fedsilo/psi/v1/entry" || list || epoch), 16 + 32 bytes
    entry      = tag, AES-256-GCM(key, nonce=0, pad(ℓ), aad=list || epoch || tag)

sorted by tag. A querier with identifiers ``q``::

    QUERY   H(q)^r, a fresh random r per identifier    ->  holder checks epoch and quota,
    ANSWER  H(q)^rk                                    <-  applies k (sees group elements only)
    querier: (H(q)^rk)^(1/r) = H(q)^k -> tag, key -> finds the entry, decrypts the label

Under the gm crypto suite the same protocol runs on the SM2 curve (``H`` is RFC 9380's
SSWU hash with SM3, :mod:`fedsilo.privacy.psi.sm2`), ``tag || key`` comes from the SM3 KDF
(16 + 16 bytes) and each label is sealed with SM4-GCM under a fresh random nonce (the
suite's ``seal``): a gm table (format version 2) never touches Curve25519, SHA-2 or AES,
and a querier of one suite refuses the other suite's table by name.

Guarantees (semi-honest parties; DDH and one-more-DH hard in ristretto255, or on
sm2p256v1 under gm; H and the KDF random oracles; the AEAD secure):

* The holder learns who asked, when and how many identifiers, never which: each
  query element is a uniformly random group element.
* The querier learns, for each identifier it asked, whether it is on the list and its
  label, and the table's size; nothing about other entries: without ``k`` a tag or a
  key cannot be computed, so the table alone lets it test no identifier. Each
  evaluated element lets it test one identifier of its choice, which is why the
  holder's :class:`~privacy.psi.quota.QueryQuota` is the only limit on a dictionary
  attack by a querier.
* A label is readable only with the key of its own identifier in its own epoch: a
  table of an old epoch cannot be read with answers of a new one, and answers are
  refused for any epoch but the current one (:class:`~fedsilo.errors.StaleEpoch`).
  :meth:`ListHolder.rotate` draws a new ``k`` and forgets the old one.

Labels are padded to ``label_width`` bytes, so ciphertexts do not reveal label
lengths. Each AES-GCM key encrypts one message, so the fixed nonce is safe.
An identifier may appear once in a published list (:class:`DataError` otherwise).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedsilo.errors import ConfigError, CryptoSuiteError, DataError, ProtocolError, StaleEpoch
from fedsilo.privacy.crypto_suite import get_suite
from fedsilo.privacy.psi import groups
from fedsilo.privacy.psi.parallel import BATCH, Workers, chunks
from fedsilo.privacy.psi.quota import QueryQuota
from fedsilo.privacy.psi.wire import MAX_BATCH, FrameType, decode, encode

__all__ = ["TAG_BYTES", "ListHolder", "EncryptedTable", "Querier", "PendingQuery"]

TAG_BYTES = 16
_TABLE = struct.Struct(">4sB3xQ8sIH2x")
_TABLE_MAGIC = b"FPQT"
_VERSIONS = {"standard": 1, "gm": 2}  # the table format names the suite: 1 ristretto255/HKDF/AES, 2 SM2/SM3/SM4
_SUITES = {version: suite for suite, version in _VERSIONS.items()}
_NONCE = bytes(12)
_MAX_LABEL = 1024


def list_digest(list_id: str) -> bytes:
    """8 bytes naming a list inside messages (the list's name is not secret)."""
    return hashlib.sha256(b"fedsilo/psi/v1/list" + list_id.encode()).digest()[:8]


def _overhead(suite: str) -> int:
    """Bytes a sealed label adds to ``2 + label_width``: the GCM tag, and under gm the suite's random nonce."""
    return 16 if suite == "standard" else 12 + 16


def _entry_keys(elements: np.ndarray, list_hash: bytes, epoch: int, suite: str) -> tuple[list[bytes], list[bytes]]:
    """``tag || key`` of each element: the suite's KDF (standard: HKDF-SHA256, 16 + 32 bytes; gm: SM3 KDF, 16 + 16)."""
    info = b"fedsilo/psi/v1/entry" + list_hash + epoch.to_bytes(8, "big")
    chosen = get_suite(suite)
    size = TAG_BYTES + max(chosen.aead_key_sizes)
    tags, keys = [], []
    for row in elements:
        okm = chosen.kdf(row.tobytes(), info, size)
        tags.append(okm[:TAG_BYTES])
        keys.append(okm[TAG_BYTES:])
    return tags, keys


def _seal(suite: str, key: bytes, padded: bytes, aad: bytes) -> bytes:
    if suite == "standard":
        return AESGCM(key).encrypt(_NONCE, padded, aad)  # one message per key: the fixed nonce is safe
    return get_suite(suite).seal(key, padded, aad)


def _aad(list_hash: bytes, epoch: int, tag: bytes) -> bytes:
    return b"fedsilo/psi/v1/label" + list_hash + epoch.to_bytes(8, "big") + tag


def _encrypt_batch(
    batch: list[tuple[str, str]],
    kind: str | None,
    scalar: bytes,
    list_hash: bytes,
    epoch: int,
    width: int,
    suite: str = "standard",
) -> tuple[bytes, bytes]:
    ids = [identifier for identifier, _ in batch]
    elements = groups.query_group(suite).hash_identifiers(ids, kind, scalar)
    tags, keys = _entry_keys(elements, list_hash, epoch, suite)
    cts = bytearray()
    for (_, label), tag, key in zip(batch, tags, keys):
        data = label.encode() if isinstance(label, str) else bytes(label)
        if len(data) > width:
            raise DataError(
                f"a label is {len(data)} bytes, longer than the table's label width {width}; "
                "raise label_width or shorten the labels"
            )
        padded = len(data).to_bytes(2, "big") + data + bytes(width - len(data))
        cts += _seal(suite, key, padded, _aad(list_hash, epoch, tag))
    return b"".join(tags), bytes(cts)


@dataclass(frozen=True)
class EncryptedTable:
    """A published table as the querier holds it (parse with :meth:`from_bytes`)."""

    list_hash: bytes
    epoch: int
    label_width: int
    tags: np.ndarray  # (n, 16) uint8, sorted
    ciphertexts: np.ndarray  # (n, 2 + label_width + overhead) uint8: 16 (standard) or 28 (gm)
    suite: str = "standard"

    @property
    def size(self) -> int:
        """Number of entries (public)."""
        return len(self.tags)

    def to_bytes(self) -> bytes:
        """The table as published (header, sorted tags, ciphertexts)."""
        head = _TABLE.pack(_TABLE_MAGIC, _VERSIONS[self.suite], self.epoch, self.list_hash, self.size, self.label_width)
        return head + self.tags.tobytes() + self.ciphertexts.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedTable:
        """Parse and check a published table (ProtocolError if malformed)."""
        if len(data) < _TABLE.size:
            raise ProtocolError("not a fedsilo query table (too short)")
        magic, version, epoch, list_hash, count, width = _TABLE.unpack_from(data)
        if magic != _TABLE_MAGIC or version not in _SUITES:
            raise ProtocolError("not a fedsilo query table of a supported version")
        suite = _SUITES[version]
        ct = 2 + width + _overhead(suite)
        if len(data) != _TABLE.size + count * (TAG_BYTES + ct):
            raise ProtocolError("the query table's length does not match its header")
        tags = np.frombuffer(data, np.uint8, count * TAG_BYTES, _TABLE.size).reshape(count, TAG_BYTES)
        cts = np.frombuffer(data, np.uint8, count * ct, _TABLE.size + count * TAG_BYTES).reshape(count, ct)
        table = cls(list_hash, epoch, width, tags, cts, suite)
        keys = table._keys()
        if count > 1 and not (keys[1:] >= keys[:-1]).all():
            raise ProtocolError("the query table's tags are not sorted")
        return table

    def _keys(self) -> np.ndarray:
        """The first 8 bytes of each tag as big-endian integers (contiguous, computed once)."""
        keys = self.__dict__.get("_prefixes")
        if keys is None:
            keys = np.ascontiguousarray(np.ascontiguousarray(self.tags).view(np.dtype(">u8")).reshape(-1, 2)[:, 0])
            self.__dict__["_prefixes"] = keys
        return keys

    def lookup(self, elements: np.ndarray) -> list[str | None]:
        """The label of each ``H(q)^k`` in ``elements``, or None where it is not in the table."""
        tags, keys = _entry_keys(elements, self.list_hash, self.epoch, self.suite)
        prefixes = self._keys()
        out: list[str | None] = []
        for tag, key in zip(tags, keys):
            prefix = np.uint64(int.from_bytes(tag[:8], "big"))
            lo = int(np.searchsorted(prefixes, prefix, "left"))
            label = None
            while lo < self.size and prefixes[lo] == prefix:
                if self.tags[lo].tobytes() == tag:
                    label = self._open(key, tag, self.ciphertexts[lo].tobytes())
                    break
                lo += 1
            out.append(label)
        return out

    def _open(self, key: bytes, tag: bytes, ct: bytes) -> str:
        aad = _aad(self.list_hash, self.epoch, tag)
        try:
            if self.suite == "standard":
                padded = AESGCM(key).decrypt(_NONCE, ct, aad)
            else:
                padded = get_suite(self.suite).open(key, ct, aad)
        except (InvalidTag, CryptoSuiteError):
            raise ProtocolError("a table entry failed authentication; the table is corrupt or forged") from None
        n = int.from_bytes(padded[:2], "big")
        if n > self.label_width:
            raise ProtocolError("a table entry has a malformed label")
        return padded[2 : 2 + n].decode()


class ListHolder:
    """The list holder: publishes the encrypted table, answers blinded queries under quota.

    ``list_id`` names the list (public); ``quota`` bounds how many identifiers each
    querier may have evaluated (see :mod:`fedsilo.privacy.psi.quota`); ``suite`` is the
    consortium's crypto suite (module doc). The secret key of the current epoch lives only
    in this object.
    """

    def __init__(
        self,
        list_id: str,
        quota: QueryQuota,
        *,
        kind: str | None = "id",
        label_width: int = 32,
        epoch: int = 1,
        workers: Workers | None = None,
        suite: str = "standard",
    ) -> None:
        if not isinstance(label_width, int) or not 1 <= label_width <= _MAX_LABEL:
            raise ConfigError(f"label_width must be 1..{_MAX_LABEL} bytes, got {label_width!r}")
        if not isinstance(epoch, int) or not 0 <= epoch < 1 << 63:
            raise ConfigError(f"a key epoch is a non-negative integer, got {epoch!r}")
        self.list_id, self.list_hash = list_id, list_digest(list_id)
        self.quota, self.kind, self.label_width = quota, kind, label_width
        self.epoch = epoch
        self.suite, self.group = suite, groups.query_group(suite)
        self._key = self.group.random_scalar()
        self._workers = workers or Workers(1)

    def rotate(self) -> int:
        """Start a new key epoch (the old key is forgotten); publish the list again after it."""
        self._key = self.group.random_scalar()
        self.epoch += 1
        return self.epoch

    def publish(self, entries: Iterable[tuple[str, str]]) -> EncryptedTable:
        """The encrypted table of ``entries`` (identifier, label) for the current epoch.

        ``entries`` is read once, in batches; an identifier that appears twice is refused.
        """
        tags, cts = bytearray(), bytearray()
        for t, c in self._workers.map(
            _encrypt_batch,
            chunks(entries, BATCH),
            self.kind,
            self._key,
            self.list_hash,
            self.epoch,
            self.label_width,
            self.suite,
        ):
            tags += t
            cts += c
        tag_rows = np.frombuffer(bytes(tags), np.uint8).reshape(-1, TAG_BYTES)
        ct_rows = np.frombuffer(bytes(cts), np.uint8).reshape(len(tag_rows), -1)
        order = np.lexsort(np.ascontiguousarray(tag_rows).view(">u8").reshape(-1, 2).T[::-1])
        tag_rows, ct_rows = tag_rows[order], ct_rows[order]
        if len(tag_rows) > 1 and (tag_rows[1:] == tag_rows[:-1]).all(axis=1).any():
            raise DataError("an identifier appears twice in the list; give each identifier one label")
        return EncryptedTable(self.list_hash, self.epoch, self.label_width, tag_rows, ct_rows, self.suite)

    def answer(self, querier: str, request: bytes) -> bytes:
        """Evaluate a querier's blinded identifiers, after checking epoch, list and quota.

        Raises :class:`StaleEpoch` for another epoch, :class:`QuotaExceeded` over quota
        (nothing evaluated), :class:`ProtocolError` for a malformed request or an invalid
        element (nothing is charged for a malformed frame; an invalid element is
        charged, since checking it is part of evaluating).
        """
        frame = decode(request, {FrameType.QUERY}, self.group.wire)
        epoch, list_hash = int.from_bytes(frame.session[:8], "big"), frame.session[8:]
        if list_hash != self.list_hash:
            raise ProtocolError("the query names another list; check the list name")
        if epoch != self.epoch:
            raise StaleEpoch(
                f"the query is for key epoch {epoch} but the list is served at epoch {self.epoch}; "
                "fetch the current table and ask again"
            )
        if frame.count == 0:
            raise ProtocolError("an empty query was refused")
        self.quota.consume(querier, frame.count)
        answered = self.group.multiply(frame.elements, self._key)
        return encode(FrameType.ANSWER, 0, frame.session, 0, answered, group=self.group.wire)


class PendingQuery:
    """A query sent and not yet answered: holds the blinding scalars (never sent)."""

    def __init__(self, table: EncryptedTable, request: bytes, inverses: np.ndarray) -> None:
        self.request, self._table, self._inverses = request, table, inverses
        self._group = groups.query_group(table.suite)

    def open(self, answer: bytes) -> list[str | None]:
        """The label of each asked identifier, in order, or None where it is not on the list."""
        frame = decode(answer, {FrameType.ANSWER}, self._group.wire)
        if frame.session != self.request[8:24] or frame.count != len(self._inverses):
            raise ProtocolError("the answer does not match the query (another epoch, list or count)")
        return self._table.lookup(self._group.multiply_each(frame.elements, self._inverses))


class Querier:
    """The querier's side: blinds identifiers, reads labels from the holder's table.

    ``suite`` is the consortium's crypto suite: a table published under another suite is
    refused (:class:`ProtocolError` naming both).
    """

    def __init__(self, table: EncryptedTable | bytes, *, kind: str | None = "id", suite: str = "standard") -> None:
        self.table = table if isinstance(table, EncryptedTable) else EncryptedTable.from_bytes(table)
        if self.table.suite != suite:
            raise ProtocolError(
                f"the list holder published its query table under the {self.table.suite} crypto suite, this peer "
                f"runs the {suite} suite: the two peers disagree on the consortium's suite; the table was refused"
            )
        self.kind, self.group = kind, groups.query_group(suite)

    def ask(self, identifiers: Sequence[str]) -> PendingQuery:
        """Blind ``identifiers`` (at most 65536) with fresh scalars; send ``.request``."""
        if not 1 <= len(identifiers) <= MAX_BATCH:
            raise ConfigError(f"a query asks for 1..{MAX_BATCH} identifiers, got {len(identifiers)}")
        group = self.group
        scalars = [group.random_scalar() for _ in identifiers]
        points = group.hash_identifiers(identifiers, self.kind)
        blinded = group.multiply_each(points, np.frombuffer(b"".join(scalars), np.uint8).reshape(-1, 32))
        inverses = np.frombuffer(b"".join(group.invert_scalar(s) for s in scalars), np.uint8).reshape(-1, 32)
        session = self.table.epoch.to_bytes(8, "big") + self.table.list_hash
        request = encode(FrameType.QUERY, 0, session, 0, blinded, group=group.wire)
        return PendingQuery(self.table, request, inverses)
