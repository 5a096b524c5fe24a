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
- Key agreement: not available yet. Neither library this environment can install offers
  it: ``tongsuopy`` 1.0.1 refuses ECDH on SM2 keys (EVP_PKEY_derive is not supported for
  the SM2 key type) and implements neither the GB/T 32918.3 exchange nor SM2 encryption;
  ``agree`` raises CryptoSuiteError saying so. SecAgg+ stays on the standard suite's X25519.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from tongsuopy.crypto import hashes as ts_hashes
from tongsuopy.crypto import serialization as ts_serialization
from tongsuopy.crypto.asymciphers import ec as ts_ec
from tongsuopy.crypto.exceptions import InternalError as TsInternalError
from tongsuopy.crypto.exceptions import InvalidSignature as TsInvalidSignature
from tongsuopy.crypto.exceptions import UnsupportedAlgorithm as TsUnsupportedAlgorithm

from fedsilo.errors import CryptoSuiteError
from fedsilo.privacy.crypto_suite.base import CryptoSuite

DEFAULT_USER_ID = b"1234567812345678"
TAG_BYTES = 16


class GmSuite(CryptoSuite):
    name = "gm"
    signature_algorithm = "SM2 / SM3 (user id 1234567812345678)"
    agreement_algorithm = "none yet (SM2 key exchange not offered by the installed libraries)"
    kdf_algorithm = "SM3-KDF (GB/T 32918.4)"
    aead_algorithm = "SM4-GCM"
    hash_algorithm = "SM3"
    hash_label = "sm3"

    def generate_signing_key(self) -> bytes:
        key = ts_ec.generate_private_key(ts_ec.SM2())
        return key.private_bytes(
            ts_serialization.Encoding.DER, ts_serialization.PrivateFormat.PKCS8, ts_serialization.NoEncryption()
        )

    def signing_public_key(self, private_key: bytes) -> bytes:
        return (
            self._private(private_key)
            .public_key()
            .public_bytes(ts_serialization.Encoding.X962, ts_serialization.PublicFormat.UncompressedPoint)
        )

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
        raise self._no_agreement()

    def agree(self, private_key: bytes, peer_public_key: bytes) -> bytes:
        raise self._no_agreement()

    def kdf(self, secret: bytes, info: bytes, length: int = 32) -> bytes:
        return X963KDF(hashes.SM3(), length, sharedinfo=info or None).derive(secret)

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

    def _no_agreement(self) -> CryptoSuiteError:
        return CryptoSuiteError(
            "gm suite: SM2 key agreement is not available yet (the installed tongsuopy refuses ECDH on SM2 keys); "
            "SecAgg+ pairwise secrets stay on X25519 until it is"
        )
