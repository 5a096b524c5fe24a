"""Published test vectors for the gm suite's primitives (and the standard suite's hash).

Sources:
- SM3 "abc": GB/T 32905-2016 Annex A.1 (also GM/T 0004-2012).
- SM4 single block: GB/T 32907-2016 Annex A.1 (also GM/T 0002-2012), key = plaintext.
- SM4-GCM: RFC 8998 Appendix A.1.
- SM2 signature on sm2p256v1: GB/T 32918.5-2017 Annex A / GM/T 0003.5-2012 A.2: private key
  3945208F..., user id 1234567812345678, message "message digest", k 59276E27..., giving
  Z_A = B2E14C5C..., e = F0B43E94..., (r, s) = (F5A03B06..., B1B6AA29...).
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedsilo.errors import CryptoSuiteError
from fedsilo.privacy.crypto_suite import get_suite
from fedsilo.privacy.crypto_suite.gm import DEFAULT_USER_ID

# sm2p256v1 (GB/T 32918.5 / GM/T 0003.5)
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

PRIVATE = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
XA = 0x09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020
YA = 0xCCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13
MESSAGE = b"message digest"
Z_A = "b2e14c5c79c6df5b85f4fe7ed8db7a262b9da7e07ccb0ea9f4747b8ccda8a4f3"
E = "f0b43e94ba45accaace692ed534382eb17e6ab5a19ce7b31f4486fdfc0d28640"
R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA


def _point(x: int, y: int) -> bytes:
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def _der(r: int, s: int) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    return encode_dss_signature(r, s)


def _sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def test_sm3_abc() -> None:
    assert get_suite("gm").hash(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"


def test_sm3_sixty_four_bytes() -> None:
    # GB/T 32905-2016 Annex A.2: "abcd" repeated 16 times.
    assert get_suite("gm").hash(b"abcd" * 16).hex() == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


def test_sha256_abc() -> None:
    # FIPS 180-2 Appendix B.1.
    assert get_suite("standard").hash(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_sm4_single_block() -> None:
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    encryptor = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    assert (encryptor.update(key) + encryptor.finalize()).hex() == "681edf34d206965e86b3e94f536e4246"


RFC8998_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
RFC8998_NONCE = bytes.fromhex("00001234567800000000ABCD")
RFC8998_AAD = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
RFC8998_PLAIN = bytes.fromhex(
    "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
    "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
)
RFC8998_SEALED = bytes.fromhex(
    "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
    "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    "83DE3541E4C2B58177E065A9BF7B62EC"
)


def test_sm4_gcm_rfc8998() -> None:
    suite = get_suite("gm")
    sealed = RFC8998_NONCE + RFC8998_SEALED
    assert suite._aead_encrypt(RFC8998_KEY, RFC8998_NONCE, RFC8998_PLAIN, RFC8998_AAD) == RFC8998_SEALED
    assert suite.open(RFC8998_KEY, sealed, RFC8998_AAD) == RFC8998_PLAIN
    for index in (0, 12, 12 + 63, len(sealed) - 1):  # nonce, first and last ciphertext byte, tag
        damaged = bytearray(sealed)
        damaged[index] ^= 1
        with pytest.raises(CryptoSuiteError, match="does not authenticate"):
            suite.open(RFC8998_KEY, bytes(damaged), RFC8998_AAD)
    with pytest.raises(CryptoSuiteError, match="does not authenticate"):
        suite.open(RFC8998_KEY, sealed, RFC8998_AAD + b"x")


def test_sm2_user_id_digest_and_message_digest() -> None:
    """Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA) and e = SM3(Z_A || M), as the standard prints."""
    entl = (len(DEFAULT_USER_ID) * 8).to_bytes(2, "big")
    fields = b"".join(v.to_bytes(32, "big") for v in (A, B, GX, GY, XA, YA))
    z_a = _sm3(entl + DEFAULT_USER_ID + fields)
    assert z_a.hex() == Z_A
    assert _sm3(z_a + MESSAGE).hex() == E


def test_sm2_standard_signature_verifies() -> None:
    get_suite("gm").verify(_point(XA, YA), MESSAGE, _der(R, S))


def test_sm2_standard_key_has_the_standard_public_key() -> None:
    from tongsuopy.crypto import serialization
    from tongsuopy.crypto.asymciphers import ec

    key = ec.derive_private_key(PRIVATE, ec.SM2())
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    suite = get_suite("gm")
    assert suite.signing_public_key(pkcs8) == _point(XA, YA)
    suite.verify(_point(XA, YA), MESSAGE, suite.sign(pkcs8, MESSAGE))


@pytest.mark.parametrize(
    "message, signature",
    [
        (b"message digesT", _der(R, S)),
        (MESSAGE, _der(R ^ 1, S)),
        (MESSAGE, _der(R, S ^ 1)),
        (MESSAGE, _der(S, R)),
        (MESSAGE, b"\x30\x00"),
    ],
)
def test_sm2_standard_signature_refused_when_altered(message: bytes, signature: bytes) -> None:
    with pytest.raises(CryptoSuiteError, match="does not verify"):
        get_suite("gm").verify(_point(XA, YA), message, signature)
