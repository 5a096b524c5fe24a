"""The canonical form of identifiers and the hash into the group."""

from __future__ import annotations

import hashlib
import random

import pytest

from fedsilo.errors import DataError
from fedsilo.privacy.psi.identifiers import DOMAIN, _plain_forms, canonical, canonical_forms, digests, split_typed


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


def test_batched_canonical_forms_equal_the_value_by_value_forms_and_errors():
    """canonical_forms takes whole batches of plain ASCII values through string methods at once; on any
    mix of values (spaces, tabs, newlines, control characters, non-ASCII, empty, too long, not a str) it
    gives exactly the forms of canonical() one by one, or the same error for the same first bad value."""
    rng = random.Random(7)
    alphabet = ["a", "B", "9", "-", " ", "\t", "\n", "\x00", "\x7f", "é", "ß", "ｆ"]

    def one_by_one(values):
        try:
            return [canonical(v, "id") for v in values]
        except DataError as error:
            return str(error)

    def batched(values):
        try:
            return list(canonical_forms(values, "id"))
        except DataError as error:
            return str(error)

    took_the_fast_road = 0
    for _ in range(400):
        letters = alphabet[: rng.choice([4, 12])]
        values = ["".join(rng.choices(letters, k=rng.randint(0, 5))) for _ in range(30)]
        if rng.random() < 0.6:
            values = [v for v in values if v.strip()]
        if rng.random() < 0.05:
            values.append(7)
        if rng.random() < 0.05:
            values.append("x" * 0xFFFF)
        assert batched(values) == one_by_one(values), values
        took_the_fast_road += isinstance(one_by_one(values), list) and _plain_forms(values, b"id:", 0xFFFC) is not None
    assert took_the_fast_road > 20
    many = [f"Cust-{i}" for i in range(10_000)]  # several batches
    assert list(canonical_forms(iter(many), "id")) == [canonical(v, "id") for v in many]
    with pytest.raises(DataError, match="must be a str"):
        list(canonical_forms(["a", None], "id"))
