"""Identifiers: the canonical form both sides hash, and the hash into the group.

Canonical form of an identifier ``value`` of kind ``kind`` (UTF-8 bytes of)::

    kind ":" casefold(NFKC(value)) with surrounding whitespace removed and every
    run of inner whitespace replaced by one space

* ``kind`` is a lowercase ASCII token (``[a-z0-9_-]{1,32}``) that types the value:
  ``lei`` (a Legal Entity Identifier), ``id`` (a national or customer id number),
  ``name`` (a legal name), ``account``… Two sides must use the same kind for the same
  thing; the kind is inside what is hashed, so ``id:12345`` never equals
  ``name:12345``.
* Unicode NFKC then ``str.casefold`` make full-width digits, ligatures, ``ß``/``ss``
  and letter case compare equal; nothing else (punctuation, accents) is removed.
* An empty value (after trimming) is refused, as is a value with NUL or other
  control characters.

A line ``lei:5493001KJTIIGC8Y1R12`` of a list file carries its own kind: see
:func:`split_typed`.

Hash into a group (domain-separated per group, so the digests are useful for nothing
else)::

    PSI (X25519):
        digest = SHA-512("fedsilo/psi/v2/hash-onto-curve25519" || u16(len(canonical)) || canonical)
        element = x25519.hash_onto_curve(digest)        (Elligator 2 onto Curve25519)
    anonymous query (ristretto255):
        digest = SHA-512("fedsilo/psi/v1/hash-to-group" || u16(len(canonical)) || canonical)
        element = ristretto255_from_hash(digest)
"""

from __future__ import annotations

import hashlib
import itertools
import re
import struct
import unicodedata
from collections.abc import Iterable, Iterator

import numpy as np

from fedsilo.errors import DataError

__all__ = ["DOMAIN", "PSI_DOMAIN", "canonical", "canonical_forms", "split_typed", "digests"]

DOMAIN = b"fedsilo/psi/v1/hash-to-group"  # the anonymous query's hash into ristretto255
PSI_DOMAIN = b"fedsilo/psi/v2/hash-onto-curve25519"  # PSI's hash onto Curve25519
_KIND = re.compile(r"[a-z0-9_-]{1,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc
_MAX_BYTES = 0xFFFF


def _check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise DataError(f"identifier kind {kind!r} must be 1-32 characters of a-z, 0-9, '_' or '-' (e.g. 'lei', 'id')")
    return kind


def canonical(value: str, kind: str) -> bytes:
    """The canonical UTF-8 bytes of ``value`` typed as ``kind`` (see the module doc)."""
    return _canonical(value, _check_kind(kind))


def _canonical(value: str, kind: str) -> bytes:
    if isinstance(value, str) and value.isascii():
        # The same form, faster: NFKC leaves ASCII as it is, casefold() is lower() there,
        # and an ASCII text is printable exactly when it has no control character.
        text = " ".join(value.lower().split())
        if text and text.isprintable() and len(text) + len(kind) < _MAX_BYTES:
            return f"{kind}:{text}".encode()
    if not isinstance(value, str):
        raise DataError(f"an identifier must be a str, got {type(value).__name__}")
    # str.split() splits on the characters str.isspace() accepts, exactly what \s matches
    # in a str pattern: trimming and collapsing runs of whitespace in one pass.
    text = " ".join(unicodedata.normalize("NFKC", value).casefold().split())
    if not text:
        raise DataError(f"an empty {kind!r} identifier was given; remove blank entries from the list")
    if _CONTROL.search(text):
        raise DataError(f"a {kind!r} identifier contains a control character; clean the list first")
    out = f"{kind}:{text}".encode()
    if len(out) > _MAX_BYTES:
        raise DataError(f"a {kind!r} identifier is longer than {_MAX_BYTES} bytes")
    return out


def split_typed(line: str) -> tuple[str, str]:
    """Split ``"kind:value"`` into ``(kind, value)``; the kind is required."""
    kind, sep, value = line.strip().partition(":")
    if not sep:
        raise DataError("an identifier has no kind prefix: write each one as KIND:VALUE, e.g. 'lei:…' or 'id:…'")
    return _check_kind(kind.strip().lower()), value


def digests(values: Iterable[str], kind: str | None, domain: bytes = DOMAIN) -> np.ndarray:
    """64-byte hash-to-group digests of ``values``, as a ``uint8`` array ``(n, 64)``.

    With ``kind=None`` every value must carry its own ``kind:`` prefix. ``domain``
    names the group (see the module doc): :data:`DOMAIN` (the query's ristretto255,
    the default) or :data:`PSI_DOMAIN`.
    """
    pack, sha512 = struct.Struct(">H").pack, hashlib.sha512
    out = b"".join([sha512(domain + pack(len(data)) + data).digest() for data in canonical_forms(values, kind)])
    return np.frombuffer(out, dtype=np.uint8).reshape(-1, 64)


def canonical_forms(values: Iterable[str], kind: str | None) -> Iterator[bytes]:
    """The canonical form of each value, lazily; with ``kind=None`` each carries its ``kind:`` prefix."""
    if kind is None:
        return (_canonical(v, k) for k, v in map(split_typed, values))
    _check_kind(kind)
    return _batched_forms(iter(values), kind)


_BATCH = 4096


def _batched_forms(values: Iterator[str], kind: str) -> Iterator[bytes]:
    """:func:`_canonical` of each value, a batch at a time through whole-batch operations when it can.

    A batch takes the fast road when it is all ``str``, ASCII, and no value is empty, holds a
    newline (the separator), a space or a control character, or is too long: then each form is
    ``kind:`` + the value lowercased, exactly what :func:`_canonical` gives. Any other batch goes
    value by value (and raises at its first bad value, as :func:`_canonical` does).
    """
    prefix = f"{kind}:".encode()
    longest = _MAX_BYTES - len(prefix)
    while batch := list(itertools.islice(values, _BATCH)):
        forms = _plain_forms(batch, prefix, longest)
        yield from forms if forms is not None else (_canonical(value, kind) for value in batch)


def _plain_forms(batch: list[str], prefix: bytes, longest: int) -> list[bytes] | None:
    """The canonical forms of a batch of plain ASCII values (see :func:`_batched_forms`), else ``None``."""
    try:
        joined = "\n".join(batch)
    except TypeError:  # not all str: the value-by-value road names the culprit
        return None
    if not joined.isascii():
        return None
    data = joined.encode()
    codes = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(codes == 10)
    if len(breaks) != len(batch) - 1 or ((codes < 33) & (codes != 10)).any() or (codes == 127).any():
        return None
    lengths = np.diff(np.concatenate(([-1], breaks, [len(codes)]))) - 1
    if lengths.min() < 1 or lengths.max() > longest:
        return None
    return (prefix + data.lower().replace(b"\n", b"\n" + prefix)).split(b"\n")
