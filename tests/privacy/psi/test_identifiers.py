"""The canonical form of identifiers and the hash into the group."""

from __future__ import annotations

import hashlib

import pytest

from fedsilo.errors import DataError
from fedsilo.privacy.psi.identifiers import DOMAIN, canonical, digests, split_typed


def test_canonical_form_trims_folds_and_types():
    assert canonical("  ACME   Holding\tAG ", "name") == b"name:acme holding ag"
    assert canonical("Straße", "name") == canonical("STRASSE", "name")
    assert canonical("１２３４５", "id") == b"id:12345"  # full-width digits (NFKC)
    assert canonical("ﬁnance", "name") == b"name:finance"  # ligature (NFKC)
    assert canonical("12345", "id") != canonical("12345", "name")


@pytest.mark.parametrize("value,kind", [("   ", "id"), ("a\x00b", "id"), ("x", "ID"), ("x", "l e i"), ("x", "")])
def test_bad_identifiers_are_refused(value, kind):
    with pytest.raises(DataError):
        canonical(value, kind)


def test_typed_lines():
    assert split_typed(" LEI:5493001KJTIIGC8Y1R12 ") == ("lei", "5493001KJTIIGC8Y1R12")
    with pytest.raises(DataError, match="KIND:VALUE"):
        split_typed("5493001KJTIIGC8Y1R12")


def test_digest_is_domain_separated_sha512():
    data = b"lei:abc"
    expected = hashlib.sha512(DOMAIN + len(data).to_bytes(2, "big") + data).digest()
    assert digests(["ABC"], "lei")[0].tobytes() == expected
    assert digests(["lei:ABC"], None)[0].tobytes() == expected
    assert digests([], "id").shape == (0, 64)
