"""The contract every crypto suite keeps, run against both implementations.

Written from the side of whoever holds a public key, a signature or a sealed payload and
wants it accepted altered, or accepted under the other suite.
"""

from __future__ import annotations

import pytest

from fedsilo.errors import CryptoSuiteError
from fedsilo.privacy.crypto_suite import SUITES, CryptoSuite, get_suite

MESSAGE = b'{"job":"risk-model","round":3}'


@pytest.fixture(params=SUITES)
def suite(request: pytest.FixtureRequest) -> CryptoSuite:
    return get_suite(request.param)


def _other(suite: CryptoSuite) -> CryptoSuite:
    return get_suite(next(name for name in SUITES if name != suite.name))


def test_unknown_suite_refused_by_name() -> None:
    with pytest.raises(CryptoSuiteError, match="unknown crypto suite 'sm9': choose one of standard, gm"):
        get_suite("sm9")


def test_sign_verify_round_trip(suite: CryptoSuite) -> None:
    key = suite.generate_signing_key()
    public = suite.signing_public_key(key)
    assert len(public) == 65 and public[0] == 4
    suite.verify(public, MESSAGE, suite.sign(key, MESSAGE))


def test_signatures_are_randomised_and_each_verifies(suite: CryptoSuite) -> None:
    key = suite.generate_signing_key()
    public = suite.signing_public_key(key)
    first, second = suite.sign(key, MESSAGE), suite.sign(key, MESSAGE)
    assert first != second
    suite.verify(public, MESSAGE, first)
    suite.verify(public, MESSAGE, second)


def test_tampered_message_refused(suite: CryptoSuite) -> None:
    key = suite.generate_signing_key()
    signature = suite.sign(key, MESSAGE)
    with pytest.raises(CryptoSuiteError, match=f"{suite.name} suite: .*does not verify"):
        suite.verify(suite.signing_public_key(key), MESSAGE.replace(b"3", b"4"), signature)


def test_tampered_signature_refused(suite: CryptoSuite) -> None:
    key = suite.generate_signing_key()
    signature = bytearray(suite.sign(key, MESSAGE))
    signature[-1] ^= 1
    with pytest.raises(CryptoSuiteError, match="does not verify"):
        suite.verify(suite.signing_public_key(key), MESSAGE, bytes(signature))
    with pytest.raises(CryptoSuiteError, match="does not verify"):
        suite.verify(suite.signing_public_key(key), MESSAGE, b"not a signature")


def test_wrong_key_refused(suite: CryptoSuite) -> None:
    signature = suite.sign(suite.generate_signing_key(), MESSAGE)
    stranger = suite.signing_public_key(suite.generate_signing_key())
    with pytest.raises(CryptoSuiteError, match="does not verify"):
        suite.verify(stranger, MESSAGE, signature)


def test_other_suites_public_key_refused(suite: CryptoSuite) -> None:
    """A point of the other suite's curve is not a point of this one: refused before any verification."""
    other = _other(suite)
    key = other.generate_signing_key()
    with pytest.raises(CryptoSuiteError, match=f"{suite.name} suite: the public key is not"):
        suite.verify(other.signing_public_key(key), MESSAGE, other.sign(key, MESSAGE))


def test_other_suites_signing_key_refused(suite: CryptoSuite) -> None:
    with pytest.raises(CryptoSuiteError, match=f"{suite.name} suite: the signing key is not"):
        suite.sign(_other(suite).generate_signing_key(), MESSAGE)
    with pytest.raises(CryptoSuiteError, match="not a PKCS#8 DER private key"):
        suite.sign(b"garbage", MESSAGE)


def test_seal_open_round_trip_and_fresh_nonces(suite: CryptoSuite) -> None:
    key = bytes(range(suite.aead_key_sizes[0]))
    first, second = suite.seal(key, b"share", b"round 3"), suite.seal(key, b"share", b"round 3")
    assert first[:12] != second[:12]
    assert suite.open(key, first, b"round 3") == suite.open(key, second, b"round 3") == b"share"


@pytest.mark.parametrize("change", ["ciphertext", "aad", "key", "truncated"])
def test_altered_sealed_payload_refused(suite: CryptoSuite, change: str) -> None:
    key = bytes(range(suite.aead_key_sizes[0]))
    sealed, aad = suite.seal(key, b"a secret share", b"peer-a->peer-b"), b"peer-a->peer-b"
    if change == "ciphertext":
        sealed = sealed[:13] + bytes([sealed[13] ^ 1]) + sealed[14:]
    elif change == "aad":
        aad = b"peer-c->peer-b"
    elif change == "key":
        key = bytes(len(key))
    else:
        sealed = sealed[:20]
    with pytest.raises(CryptoSuiteError, match=f"{suite.name} suite"):
        suite.open(key, sealed, aad)


def test_wrong_key_size_refused(suite: CryptoSuite) -> None:
    with pytest.raises(CryptoSuiteError, match=f"{suite.name} suite: .* takes a"):
        suite.seal(bytes(24), b"x")


def test_kdf_is_deterministic_and_bound_to_context(suite: CryptoSuite) -> None:
    secret = bytes(range(32))
    assert suite.kdf(secret, b"mask", 32) == suite.kdf(secret, b"mask", 32)
    assert suite.kdf(secret, b"mask", 32) != suite.kdf(secret, b"share", 32)
    assert len(suite.kdf(secret, b"mask", 80)) == 80


def test_hash_is_thirty_two_bytes(suite: CryptoSuite) -> None:
    assert len(suite.hash(b"")) == 32 and suite.hash(b"a") != suite.hash(b"b")


def test_suites_differ_in_every_algorithm() -> None:
    standard, gm = get_suite("standard").describe(), get_suite("gm").describe()
    assert all(standard[op] != gm[op] for op in standard)


def test_standard_key_agreement() -> None:
    suite = get_suite("standard")
    a_private, a_public = suite.agreement_keypair()
    b_private, b_public = suite.agreement_keypair()
    assert suite.agree(a_private, b_public) == suite.agree(b_private, a_public)
    with pytest.raises(CryptoSuiteError, match="X25519 agreement refused"):
        suite.agree(a_private, bytes(32))  # the all-zero (small-order) point


def test_key_agreement_round_trip_and_other_suites_keys_refused(suite: CryptoSuite) -> None:
    a_private, a_public = suite.agreement_keypair()
    b_private, b_public = suite.agreement_keypair()
    assert len(a_private) == 32 and suite.agreement_public_key(a_private) == a_public
    assert suite.agree(a_private, b_public) == suite.agree(b_private, a_public)
    assert suite.agree(a_private, b_public) != suite.agree(a_private, suite.agreement_keypair()[1])
    _, other_public = _other(suite).agreement_keypair()
    with pytest.raises(CryptoSuiteError, match=f"{suite.name} suite: .*(gm|standard) suite"):
        suite.agree(a_private, other_public)


def test_salt_binds_the_kdf_and_an_empty_salt_is_the_plain_kdf(suite: CryptoSuite) -> None:
    secret = bytes(range(32))
    assert suite.kdf(secret, b"mask", 32, salt=b"") == suite.kdf(secret, b"mask", 32)
    assert suite.kdf(secret, b"mask", 32, salt=b"protocol/v1") != suite.kdf(secret, b"mask", 32)


def test_keystream_is_deterministic_per_seed_and_context(suite: CryptoSuite) -> None:
    seed = bytes(range(32))
    first = suite.keystream(seed, b"self-mask").update(bytes(64))
    assert first == suite.keystream(seed, b"self-mask").update(bytes(64))
    assert first != suite.keystream(seed, b"pair-mask").update(bytes(64))
    assert first != suite.keystream(bytes(32), b"self-mask").update(bytes(64))
    with pytest.raises(ValueError, match="32 bytes"):
        suite.keystream(b"short", b"x")


def test_gm_kdf_is_the_gb_t_32918_kdf() -> None:
    """GB/T 32918.4 §5.4.3: K = SM3(Z || 00000001) || SM3(Z || 00000002) ..., truncated."""
    from cryptography.hazmat.primitives import hashes

    def sm3(data: bytes) -> bytes:
        digest = hashes.Hash(hashes.SM3())
        digest.update(data)
        return digest.finalize()

    z = bytes(range(64))
    expected = (sm3(z + (1).to_bytes(4, "big")) + sm3(z + (2).to_bytes(4, "big")))[:40]
    assert get_suite("gm").kdf(z, b"", 40) == expected
