"""The gm suite: the Chinese national commercial algorithms (SM2, SM3, SM4).

- Signatures: SM2 (GB/T 32918.2 / GM/T 0003.2) with SM3 over ``Z_A || M``, where ``Z_A`` is
  the SM3 digest of the signer's user id, the curve parameters and the public key; the
  user id is the standard's default ``1234567812345678`` (GM/T 0009). Computed by Tongsuo
  (the OpenAtom Foundation's OpenSSL fork, via ``tongsuopy``), in C; nonces come from its
  RNG. ``tongsuopy`` takes no other user id.
- KDF: the SM2 key-derivation function of GB/T 32918.4 §5.4.3, ``SM3(Z || ct) || SM3(Z || ct+1) ...``
  with a 32-bit big-endian counter from 1, and the context ``info`` appended after the
  counter (ANSI X9.63 shape; with an empty ``info`` it is exactly the standard's KDF).
  Computed by ``cryptography``'s X963KDF with SM3.
- AEAD: SM4-GCM (GB/T 32907 cipher in the GCM mode of RFC 8998), ``cryptography`` (OpenSSL);
  keys are 16 bytes, SM4's only key size.
- Hash: SM3 (GB/T 32905), ``cryptography``.
- Key agreement: static-static ECDH on the SM2 curve (sm2p256v1, GB/T 32918.5), computed by
  Tongsuo's EC arithmetic: the secret is the 32-byte x-coordinate of ``d_A · P_B``. Private
  keys are the 32-byte big-endian scalar ``d`` in [1, n - 1]; public keys the uncompressed
  point ``04 || x || y`` (65 bytes), refused unless Tongsuo decodes it as a point on the curve
  (the curve's cofactor is 1, so every such point lies in the prime-order group; the point at
  infinity has no uncompressed encoding, and Tongsuo refuses an infinite result).
  This is **not** the SM2 key exchange protocol of GB/T 32918.3, which is interactive: it
  mixes an ephemeral key pair per party into the result and binds both identities through
  ``Z_A``/``Z_B`` and confirmation hashes. Here the protocol using the suite authenticates
  each public key otherwise (SecAgg+: the advertisement carrying it is SM2-signed under the
  member's manifest-bound key, and keys are fresh per round), and the raw secret goes through
  the SM3 KDF below before any use. ``tongsuopy`` implements neither the GB/T 32918.3 exchange
  nor SM2 encryption, and refuses ECDH on keys it tags as SM2: ``_sm2_ecdh`` (the one use of
  its internals) tags the two keys back as plain EC keys, which they are underneath.
- Keystream (SecAgg+ masks): SM4 in CTR mode from a zero counter, keyed by the first 16
  bytes of HMAC-SM3(seed, context), ``cryptography`` (OpenSSL).
"""

from __future__ import annotations

import functools
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from tongsuopy.backends.tongsuo.backend import backend as ts_backend
from tongsuopy.crypto import hashes as ts_hashes
from tongsuopy.crypto import serialization as ts_serialization
from tongsuopy.crypto.asymciphers import ec as ts_ec
from tongsuopy.crypto.exceptions import InternalError as TsInternalError
from tongsuopy.crypto.exceptions import InvalidSignature as TsInvalidSignature
from tongsuopy.crypto.exceptions import UnsupportedAlgorithm as TsUnsupportedAlgorithm

from fedsilo.errors import CryptoSuiteError
from fedsilo.privacy.crypto_suite.base import CryptoSuite
from fedsilo.privacy.crypto_suite.base import keystream_seed as _seed

DEFAULT_USER_ID = b"1234567812345678"
TAG_BYTES = 16
SCALAR_BYTES = 32
POINT_BYTES = 65
SM2_ORDER = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123  # n of sm2p256v1 (GB/T 32918.5)


class GmSuite(CryptoSuite):
    name = "gm"
    signature_algorithm = "SM2 / SM3 (user id 1234567812345678)"
    agreement_algorithm = "ECDH on the SM2 curve (not the GB/T 32918.3 exchange)"
    kdf_algorithm = "SM3-KDF (GB/T 32918.4)"
    aead_algorithm = "SM4-GCM"
    hash_algorithm = "SM3"
    keystream_algorithm = "SM4-CTR (key HMAC-SM3)"
    hash_label = "sm3"

    def generate_signing_key(self) -> bytes:
        key = ts_ec.generate_private_key(ts_ec.SM2())
        return key.private_bytes(
            ts_serialization.Encoding.DER, ts_serialization.PrivateFormat.PKCS8, ts_serialization.NoEncryption()
        )

    def signing_public_key(self, private_key: bytes) -> bytes:
        return _point(self._private(private_key).public_key())

    def sign(self, private_key: bytes, message: bytes) -> bytes:
        return self._private(private_key).sign(message, ts_ec.ECDSA(ts_hashes.SM3()))

    def check_public_key(self, public_key: bytes) -> None:
        self._public(public_key)

    def _public(self, public_key: bytes) -> ts_ec.EllipticCurvePublicKey:
        try:
            return ts_ec.EllipticCurvePublicKey.from_encoded_point(ts_ec.SM2(), bytes(public_key))
        except (ValueError, TypeError):
            raise CryptoSuiteError(
                "gm suite: the public key is not an SM2 point (a key of another suite, or malformed)"
            ) from None

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        key = self._public(public_key)
        try:
            key.verify(bytes(signature), message, ts_ec.ECDSA(ts_hashes.SM3()))
        except (TsInvalidSignature, TsInternalError, ValueError, TypeError):
            # Tongsuo reports a signature that is not DER SEQUENCE {r, s} as an internal error.
            raise CryptoSuiteError(
                "gm suite: the SM2 signature does not verify: the message was altered or signed by another key"
            ) from None

    def agreement_keypair(self) -> tuple[bytes, bytes]:
        key = ts_ec.generate_private_key(ts_ec.SM2())
        return key.private_numbers().private_value.to_bytes(SCALAR_BYTES, "big"), _point(key.public_key())

    def agreement_public_key(self, private_key: bytes) -> bytes:
        return _point(self._agreement_private(private_key).public_key())

    def agree(self, private_key: bytes, peer_public_key: bytes) -> bytes:
        mine, peer = self._agreement_private(private_key), self._agreement_public(peer_public_key)
        try:
            return _sm2_ecdh(mine, peer)
        except (ValueError, TsInternalError):
            raise CryptoSuiteError("gm suite: SM2 ECDH refused (Tongsuo computed no valid shared point)") from None

    def _agreement_private(self, private_key: bytes) -> ts_ec.EllipticCurvePrivateKey:
        if not isinstance(private_key, (bytes, bytearray)) or len(private_key) != SCALAR_BYTES:
            raise CryptoSuiteError(f"gm suite: an SM2 agreement private key is a {SCALAR_BYTES}-byte scalar")
        scalar = int.from_bytes(private_key, "big")
        if not 1 <= scalar < SM2_ORDER:
            raise CryptoSuiteError("gm suite: the SM2 agreement private key is not a scalar in [1, n - 1]")
        return _derived_private(scalar)

    def _agreement_public(self, public_key: bytes) -> ts_ec.EllipticCurvePublicKey:
        if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != POINT_BYTES or public_key[0] != 4:
            size = len(public_key) if isinstance(public_key, (bytes, bytearray)) else type(public_key).__name__
            hint = " (an X25519 key of the standard suite?)" if size == 32 else ""
            raise CryptoSuiteError(
                f"gm suite: an SM2 agreement public key is the uncompressed point 04 || x || y of "
                f"{POINT_BYTES} bytes, not {size}{hint}"
            )
        try:
            return ts_ec.EllipticCurvePublicKey.from_encoded_point(ts_ec.SM2(), bytes(public_key))
        except ValueError:
            raise CryptoSuiteError(
                "gm suite: the agreement public key is not a point of the SM2 curve (a P-256 point, or malformed)"
            ) from None

    def kdf(self, secret: bytes, info: bytes, length: int = 32, salt: bytes = b"") -> bytes:
        context = salt + info
        return X963KDF(hashes.SM3(), length, sharedinfo=context or None).derive(secret)

    def keystream(self, seed: bytes, context: bytes) -> Any:
        mac = hmac.HMAC(_seed(seed), hashes.SM3())
        mac.update(context)
        return Cipher(algorithms.SM4(mac.finalize()[:16]), modes.CTR(bytes(16))).encryptor()

    def hash(self, data: bytes) -> bytes:
        digest = hashes.Hash(hashes.SM3())
        digest.update(data)
        return digest.finalize()

    def hasher(self) -> hashes.Hash:
        return hashes.Hash(hashes.SM3())

    aead_key_sizes = (16,)

    def _aead_encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        body = encryptor.update(plaintext) + encryptor.finalize()
        return body + encryptor.tag

    def _aead_decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        body, tag = ciphertext[:-TAG_BYTES], ciphertext[-TAG_BYTES:]
        decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(aad)
        try:
            return decryptor.update(body) + decryptor.finalize()
        except InvalidTag:
            raise CryptoSuiteError(
                "gm suite: the sealed payload does not authenticate: altered, or sealed with another key"
            ) from None

    def _private(self, private_key: bytes) -> ts_ec.EllipticCurvePrivateKey:
        try:
            key = ts_serialization.load_der_private_key(bytes(private_key), password=None)
        except (ValueError, TypeError, TsUnsupportedAlgorithm):
            raise CryptoSuiteError("gm suite: the signing key is not a PKCS#8 DER private key") from None
        if not isinstance(key, ts_ec.EllipticCurvePrivateKey) or key.curve.name != "SM2":
            raise CryptoSuiteError("gm suite: the signing key is not an SM2 key (a key of another suite?)")
        return key


@functools.lru_cache(maxsize=64)
def _derived_private(scalar: int) -> ts_ec.EllipticCurvePrivateKey:
    """The Tongsuo key of an agreement scalar, kept for the next uses of the same key.

    Loading a key from its scalar costs a scalar multiplication (tongsuopy computes the
    public point), as much as the agreement itself, and a SecAgg+ round key serves one
    agreement per neighbour and stage. The last 64 keys this process used stay loaded:
    they are its own round keys (or, at the host, reconstructed keys of dropped peers),
    already in its memory; only ever used by `agree` and `agreement_public_key`.
    """
    return ts_ec.derive_private_key(scalar, ts_ec.SM2())


def _point(key: ts_ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(ts_serialization.Encoding.X962, ts_serialization.PublicFormat.UncompressedPoint)


def _sm2_ecdh(private: ts_ec.EllipticCurvePrivateKey, public: ts_ec.EllipticCurvePublicKey) -> bytes:
    """x(d · P) on sm2p256v1, by Tongsuo's ECDH (ECDH_compute_key).

    The one private use of tongsuopy internals (``backend._lib``, a key's ``_evp_pkey``):
    tongsuopy 1.0.1 tags every key on the SM2 curve with the EVP_PKEY_SM2 alias, which has no
    EVP_PKEY_derive ("operation not supported for this keytype"). Underneath they are EC_KEYs
    on the sm2p256v1 group; tagging the two key objects (fresh ones, made for this call only)
    back as EVP_PKEY_EC routes `exchange` to Tongsuo's ECDH on that group. Checked by
    tests/privacy/crypto_suite/test_gm_agreement.py, which fails if an upgrade changes this.
    """
    lib = ts_backend._lib
    for key in (private, public):
        if lib.EVP_PKEY_set_alias_type(key._evp_pkey, lib.EVP_PKEY_EC) != 1:
            raise CryptoSuiteError("gm suite: Tongsuo refused to treat an SM2 key as an EC key for ECDH")
    return private.exchange(ts_ec.ECDH(), public)
