from __future__ import annotations

import itertools
import random

import pytest

from fedsilo.privacy.secagg import shamir


def test_any_t_shares_reconstruct_many_secrets_with_one_lagrange_computation():
    rng = random.Random(1)
    secrets = [rng.getrandbits(256) for _ in range(50)]
    holders = [shamir.point_of(v) for v in (3, 10, 2**64 - 1, 77, 5, 1000)]
    t = 4
    shares = shamir.split(secrets, holders, t)
    for subset in itertools.combinations(range(len(holders)), t):
        coeffs = shamir.lagrange_coefficients([holders[j] for j in subset])  # once per holder set
        assert shamir.combine([shares[j] for j in subset], coeffs) == secrets


def test_fewer_than_t_shares_give_garbage():
    secrets = [2**255 + 12345]
    xs = [1, 2, 3, 4, 5]
    shares = shamir.split(secrets, xs, 3)
    assert shamir.reconstruct(xs[:2], shares[:2]) != secrets


def test_serialization_and_validation():
    s = shamir.PRIME - 1
    assert shamir.share_from_bytes(shamir.share_to_bytes(s)) == s
    with pytest.raises(ValueError):
        shamir.share_from_bytes(shamir.PRIME.to_bytes(66, "big"))
    with pytest.raises(ValueError):
        shamir.share_from_bytes(b"\x00" * 65)
    with pytest.raises(ValueError):
        shamir.split([1], [1, 1, 2], 2)
    with pytest.raises(ValueError):
        shamir.split([1], [1, 2], 3)
