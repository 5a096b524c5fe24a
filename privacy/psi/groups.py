"""The group each crypto suite's PSI and anonymous query run in, behind one interface.

============  =======================================  =====================================
suite         DH-PSI                                   anonymous query
============  =======================================  =====================================
``standard``  X25519 (:mod:`~fedsilo.privacy.psi.x25519`)  ristretto255 (:mod:`~fedsilo.privacy.psi.group`)
``gm``        SM2 curve (:mod:`~fedsilo.privacy.psi.sm2`)  SM2 curve, another hash domain
============  =======================================  =====================================

A gm consortium never touches Curve25519. Each :class:`Group` names its wire group
(:data:`WIRE_CURVE25519` or :data:`WIRE_SM2`, carried in every frame's header, see
:mod:`fedsilo.privacy.psi.wire`) and its element width. Groups are found by :attr:`Group.key`
(a string), so worker processes receive a key, not an object.

Interface: ``random_scalar()``; ``hash_identifiers(values, kind, scalar)`` hashes the
canonical forms into the group and, with a scalar, blinds them (``H(v)^k``);
``check_compared(rows, offset)`` refuses an element this side will only compare with
its own results; ``multiply(rows, scalar, offset)`` checks every received element and
raises each to the scalar; for the query, ``invert_scalar`` and ``multiply_each``.
Every refusal is a :class:`~fedsilo.errors.ProtocolError` naming the position only.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fedsilo.errors import ConfigError, ProtocolError
from fedsilo.privacy.psi import group as ristretto
from fedsilo.privacy.psi import sm2, x25519
from fedsilo.privacy.psi.identifiers import DOMAIN, PSI_DOMAIN, canonical_forms, digests

__all__ = ["WIRE_CURVE25519", "WIRE_SM2", "WIRE_NAMES", "Group", "get", "psi_group", "query_group"]

WIRE_CURVE25519 = 0  # the standard suite: X25519 (PSI) and ristretto255 (query), 32-byte elements
WIRE_SM2 = 1  # the gm suite: sm2p256v1, 33-byte compressed points
WIRE_NAMES = {WIRE_CURVE25519: "Curve25519 (standard suite)", WIRE_SM2: "SM2 curve (gm suite)"}
WIDTHS = {WIRE_CURVE25519: 32, WIRE_SM2: 33}


class Group:
    """One group as PSI or the query uses it (see the module doc)."""

    key: str
    wire: int
    element_bytes: int

    def random_scalar(self) -> bytes:
        raise NotImplementedError

    def hash_identifiers(self, values: Iterable[str], kind: str | None, scalar: bytes | None = None) -> np.ndarray:
        raise NotImplementedError

    def check_compared(self, elements: np.ndarray, offset: int = 0) -> np.ndarray:
        raise NotImplementedError

    def multiply(self, elements: np.ndarray, scalar: bytes, offset: int = 0) -> np.ndarray:
        raise NotImplementedError

    def invert_scalar(self, scalar: bytes) -> bytes:
        raise ProtocolError(f"the group {self.key} cannot invert scalars")

    def multiply_each(self, elements: np.ndarray, scalars: np.ndarray) -> np.ndarray:
        raise ProtocolError(f"the group {self.key} has no per-element multiplication")


class _X25519(Group):
    key, wire, element_bytes = "x25519", WIRE_CURVE25519, x25519.ELEMENT_BYTES

    def random_scalar(self) -> bytes:
        return x25519.random_scalar()

    def hash_identifiers(self, values: Iterable[str], kind: str | None, scalar: bytes | None = None) -> np.ndarray:
        points = x25519.hash_onto_curve(digests(values, kind, PSI_DOMAIN))
        return points if scalar is None else x25519.multiply(points, scalar)

    def check_compared(self, elements: np.ndarray, offset: int = 0) -> np.ndarray:
        return x25519.check_encoding(elements, offset)

    def multiply(self, elements: np.ndarray, scalar: bytes, offset: int = 0) -> np.ndarray:
        x25519.check_elements(elements, offset)
        return x25519.multiply(elements, scalar, offset)


class _Ristretto255(Group):
    key, wire, element_bytes = "ristretto255", WIRE_CURVE25519, ristretto.ELEMENT_BYTES

    def random_scalar(self) -> bytes:
        return ristretto.random_scalar()

    def hash_identifiers(self, values: Iterable[str], kind: str | None, scalar: bytes | None = None) -> np.ndarray:
        points = ristretto.hash_to_group(digests(values, kind, DOMAIN))
        return points if scalar is None else ristretto.multiply(points, scalar)

    def check_compared(self, elements: np.ndarray, offset: int = 0) -> np.ndarray:
        return elements

    def multiply(self, elements: np.ndarray, scalar: bytes, offset: int = 0) -> np.ndarray:
        return ristretto.multiply(elements, scalar)

    def invert_scalar(self, scalar: bytes) -> bytes:
        return ristretto.invert_scalar(scalar)

    def multiply_each(self, elements: np.ndarray, scalars: np.ndarray) -> np.ndarray:
        return ristretto.multiply_each(elements, scalars)


class _Sm2(Group):
    """sm2p256v1; ``dst`` separates PSI's hash from the query's."""

    wire, element_bytes = WIRE_SM2, sm2.ELEMENT_BYTES

    def __init__(self, key: str, dst: bytes) -> None:
        self.key, self.dst = key, dst

    def random_scalar(self) -> bytes:
        return sm2.random_scalar()

    def hash_identifiers(self, values: Iterable[str], kind: str | None, scalar: bytes | None = None) -> np.ndarray:
        return sm2.hash_to_curve(canonical_forms(values, kind), self.dst, scalar)

    def check_compared(self, elements: np.ndarray, offset: int = 0) -> np.ndarray:
        return sm2.check_elements(elements, offset)

    def multiply(self, elements: np.ndarray, scalar: bytes, offset: int = 0) -> np.ndarray:
        return sm2.multiply(elements, scalar, offset)

    def invert_scalar(self, scalar: bytes) -> bytes:
        return sm2.invert_scalar(scalar)

    def multiply_each(self, elements: np.ndarray, scalars: np.ndarray) -> np.ndarray:
        return sm2.multiply_each(elements, scalars)


_GROUPS: dict[str, Group] = {
    g.key: g for g in (_X25519(), _Ristretto255(), _Sm2("sm2-psi", sm2.PSI_DST), _Sm2("sm2-query", sm2.QUERY_DST))
}
_BY_SUITE = {"standard": ("x25519", "ristretto255"), "gm": ("sm2-psi", "sm2-query")}


def get(key: str) -> Group:
    """The group called ``key`` (ConfigError naming the known ones otherwise)."""
    try:
        return _GROUPS[key]
    except KeyError:
        raise ConfigError(f"unknown PSI group {key!r}: one of {', '.join(_GROUPS)}") from None


def _suite(suite: str) -> tuple[str, str]:
    try:
        return _BY_SUITE[suite]
    except KeyError:
        raise ConfigError(f"PSI has no group for the crypto suite {suite!r} (known: {', '.join(_BY_SUITE)})") from None


def psi_group(suite: str = "standard") -> Group:
    """DH-PSI's group under ``suite``."""
    return get(_suite(suite)[0])


def query_group(suite: str = "standard") -> Group:
    """The anonymous query's group under ``suite``."""
    return get(_suite(suite)[1])
