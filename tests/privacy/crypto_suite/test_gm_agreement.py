"""ECDH on the SM2 curve (the gm suite's key agreement), from the side of whoever sends the public key.

The agreement runs on Tongsuo's EC arithmetic through one use of tongsuopy's internals
(`gm._sm2_ecdh`); these tests fail loudly when a tongsuopy upgrade changes what that relies on.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tongsuopy.backends.tongsuo.backend import backend
from tongsuopy.crypto.asymciphers import ec as ts_ec
from tongsuopy.crypto.exceptions import InternalError

from fedsilo.errors import CryptoSuiteError
from fedsilo.privacy.crypto_suite import get_suite
from fedsilo.privacy.crypto_suite.gm import SM2_ORDER, _point

GM = get_suite("gm")


def test_shared_secret_is_the_x_coordinate_of_the_product_point() -> None:
    """x(d_a · P_b) computed by ECDH equals x((d_a d_b mod n) · G) computed by fixed-base multiplication."""
    a, a_public = GM.agreement_keypair()
    b, b_public = GM.agreement_keypair()
    product = int.from_bytes(a, "big") * int.from_bytes(b, "big") % SM2_ORDER
    expected = ts_ec.derive_private_key(product, ts_ec.SM2()).public_key().public_numbers().x.to_bytes(32, "big")
    assert GM.agree(a, b_public) == GM.agree(b, a_public) == expected


def test_fixed_scalars_give_a_fixed_secret() -> None:
    """d = 2 and d = 3: both sides reach x(6 · G) of sm2p256v1, whatever key objects are made on the way."""
    two, three = (2).to_bytes(32, "big"), (3).to_bytes(32, "big")
    six_g = ts_ec.derive_private_key(6, ts_ec.SM2()).public_key().public_numbers().x.to_bytes(32, "big")
    assert GM.agree(two, GM.agreement_public_key(three)) == GM.agree(three, GM.agreement_public_key(two)) == six_g
    # d = 1: the public key is the generator G of GB/T 32918.5
    g_x = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
    assert GM.agreement_public_key((1).to_bytes(32, "big"))[1:33] == g_x.to_bytes(32, "big")


def test_tongsuopy_still_refuses_ecdh_on_sm2_tagged_keys() -> None:
    """Why `_sm2_ecdh` re-tags the keys. If this fails, tongsuopy now derives on SM2 keys itself:
    drop the re-tagging (and its use of `_evp_pkey` / `backend._lib`) in gm.py."""
    key, peer = ts_ec.generate_private_key(ts_ec.SM2()), ts_ec.generate_private_key(ts_ec.SM2()).public_key()
    with pytest.raises(InternalError, match="operation not supported for this keytype"):
        key.exchange(ts_ec.ECDH(), peer)
    lib = backend._lib
    assert lib.EVP_PKEY_EC != lib.EVP_PKEY_SM2 and callable(lib.EVP_PKEY_set_alias_type)
    assert key._evp_pkey is not None and peer._evp_pkey is not None


def test_off_curve_point_refused_by_name() -> None:
    a, _ = GM.agreement_keypair()
    _, b_public = GM.agreement_keypair()
    off = b_public[:-1] + bytes([b_public[-1] ^ 1])  # y changed: not on the curve
    with pytest.raises(CryptoSuiteError, match="gm suite: the agreement public key is not a point of the SM2 curve"):
        GM.agree(a, off)


@pytest.mark.parametrize("encoding", ["infinity", "compressed", "truncated", "not bytes"])
def test_identity_and_non_canonical_encodings_refused(encoding: str) -> None:
    a, _ = GM.agreement_keypair()
    _, b_public = GM.agreement_keypair()
    raw = {
        "infinity": b"\x00",  # the point at infinity's only encoding
        "compressed": bytes([2 + b_public[-1] % 2]) + b_public[1:33],  # the same point, another encoding
        "truncated": b_public[:64],
        "not bytes": b_public.hex(),
    }[encoding]
    with pytest.raises(CryptoSuiteError, match="gm suite: an SM2 agreement public key is the uncompressed point"):
        GM.agree(a, raw)  # type: ignore[arg-type]


def test_a_p256_point_and_an_x25519_key_are_refused_by_name() -> None:
    a, _ = GM.agreement_keypair()
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    p256_point = p256.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    with pytest.raises(CryptoSuiteError, match="not a point of the SM2 curve \\(a P-256 point"):
        GM.agree(a, p256_point)
    _, x25519_public = get_suite("standard").agreement_keypair()
    with pytest.raises(CryptoSuiteError, match="not 32 \\(an X25519 key of the standard suite\\?\\)"):
        GM.agree(a, x25519_public)


@pytest.mark.parametrize("scalar", [0, SM2_ORDER, 2**256 - 1])
def test_private_scalar_outside_the_group_order_refused(scalar: int) -> None:
    """Tongsuo would reduce 2**256 - 1 modulo n silently; the suite refuses it (and 0, and n)."""
    _, b_public = GM.agreement_keypair()
    with pytest.raises(CryptoSuiteError, match="not a scalar in \\[1, n - 1\\]"):
        GM.agree(scalar.to_bytes(32, "big"), b_public)
    with pytest.raises(CryptoSuiteError, match="32-byte scalar"):
        GM.agree(b"\x01" * 31, b_public)


def test_public_key_helper_is_the_uncompressed_point() -> None:
    key = ts_ec.generate_private_key(ts_ec.SM2())
    d = key.private_numbers().private_value.to_bytes(32, "big")
    assert GM.agreement_public_key(d) == _point(key.public_key())


def test_keystreams_are_the_documented_constructions() -> None:
    """gm: SM4-CTR from a zero counter under HMAC-SM3(seed, context)[:16]; standard: ChaCha20 with a
    zero nonce under HMAC-SHA256(seed, context). Recomputed block by block with SM4-ECB / ChaCha20."""
    import hashlib
    import hmac as std_hmac

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hmac as c_hmac
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    seed, context = bytes(range(32)), b"fedsilo/secagg/v1/prg|pair-mask"
    mac = c_hmac.HMAC(seed, hashes.SM3())
    mac.update(context)
    ecb = Cipher(algorithms.SM4(mac.finalize()[:16]), modes.ECB()).encryptor()
    blocks = b"".join(ecb.update(i.to_bytes(16, "big")) for i in range(4))
    assert GM.keystream(seed, context).update(bytes(64)) == blocks
    key = std_hmac.new(seed, context, hashlib.sha256).digest()
    chacha = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(64))
    assert get_suite("standard").keystream(seed, context).update(bytes(64)) == chacha
