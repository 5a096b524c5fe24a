"""Crypto suites a consortium chooses from: ``standard`` (ECDSA P-256, X25519, HKDF-SHA256, AES-GCM,
SHA-256) and ``gm`` (SM2, SM3-KDF, SM4-GCM, SM3). See ``base.CryptoSuite`` for the contract and
docs/national-crypto.md for what uses which suite today.
"""

from __future__ import annotations

from fedsilo.errors import CryptoSuiteError
from fedsilo.privacy.crypto_suite.base import CryptoSuite

SUITES = ("standard", "gm")
DEFAULT_SUITE = "standard"
HASH_LABELS = {"standard": "sha256", "gm": "sm3"}  # each suite's `hash_label`, without importing its library


def get_suite(name: str) -> CryptoSuite:
    """The suite called `name`; CryptoSuiteError naming the known suites otherwise.

    The gm suite imports ``tongsuopy`` only when asked for, so a consortium on the
    standard suite does not need it installed.
    """
    if name == "standard":
        from fedsilo.privacy.crypto_suite.standard import StandardSuite

        return StandardSuite()
    if name == "gm":
        try:
            from fedsilo.privacy.crypto_suite.gm import GmSuite
        except ImportError as exc:
            raise CryptoSuiteError(f"the gm suite needs tongsuopy (pip install 'tongsuopy==1.0.1'): {exc}") from None
        return GmSuite()
    raise CryptoSuiteError(f"unknown crypto suite {name!r}: choose one of {', '.join(SUITES)}")


__all__ = ["DEFAULT_SUITE", "HASH_LABELS", "SUITES", "CryptoSuite", "CryptoSuiteError", "get_suite"]
