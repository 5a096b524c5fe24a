"""Where a result came from: exact package versions and file hashes (for model cards)."""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path

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
