"""Where a result came from: exact package versions and file hashes (for model cards).

`file_hash` hashes with the consortium's crypto suite (SHA-256 under ``standard``, SM3 under
``gm``); `sha256_file` is SHA-256 whatever the suite (simulation run folders).
"""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path

from fedsilo.privacy.crypto_suite import get_suite

TRACKED_PACKAGES = (
    "fedsilo",
    "flwr",
    "torch",
    "opacus",
    "numpy",
    "pandas",
    "ray",
    "cryptography",
    "safetensors",
    "scipy",
)


def package_versions() -> dict[str, str]:
    """Installed versions of fedsilo and the packages its results depend on."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hash(path: Path, suite: str) -> str:
    """Hex digest of the file at `path` with `suite`'s hash (label: `get_suite(suite).hash_label`)."""
    digest = get_suite(suite).hasher()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.finalize().hex()
