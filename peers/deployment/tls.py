"""TLS material of a deployed job, and the key a SuperNode authenticates with.

`TLSFiles` names PEM files: the consortium CA and a certificate/key it signed, which
the job's SuperLink serves (its Fleet, Control and Runtime APIs share one port and one
certificate in Flower 1.41). SuperNodes verify that certificate against the CA.

SuperNode authentication is separate from TLS: each SuperNode signs its requests with
an elliptic-curve key (NIST P-384, OpenSSH format, as `flower-supernode
--auth-supernode-private-key` reads it), and the SuperLink (`--enable-supernode-auth`)
accepts only nodes whose public key was registered for it through its Control API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedsilo.errors import ConfigError

NODE_KEY_FILE = "supernode-auth.key"


@dataclass(frozen=True)
class TLSFiles:
    """PEM paths: the CA that signed `cert`, and `cert`'s private `key`."""

    ca_cert: Path
    cert: Path
    key: Path

    def check(self) -> None:
        """Raise ConfigError naming the first missing file."""
        for role, path in (("CA certificate", self.ca_cert), ("certificate", self.cert), ("private key", self.key)):
            if not Path(path).is_file():
                raise ConfigError(
                    f"the SuperLink's TLS {role} {path} does not exist: "
                    f"give the consortium CA and a certificate/key it signed"
                )


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 (never world-readable, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def node_auth_keypair(directory: Path) -> bytes:
    """The SuperNode authentication key in `directory` (created once, mode 0600).

    Returns its public key as an OpenSSH line (`ecdsa-sha2-nistp384 AAAA...`): what a
    host passes to `host_training(node_public_keys=...)` to authorize this peer.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / NODE_KEY_FILE
    if not path.exists():
        key = ec.generate_private_key(ec.SECP384R1())
        _write_private(
            path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            ),
        )
    try:
        private = serialization.load_ssh_private_key(path.read_bytes(), None)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{path} is not an OpenSSH private key: remove it to have a new one made") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} is not an elliptic-curve key: remove it to have a new one made")
    return private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def node_key_path(directory: Path) -> Path:
    return Path(directory) / NODE_KEY_FILE


def public_key_pem(public_key: bytes) -> bytes:
    """A node public key (OpenSSH line or PEM) as the PEM SubjectPublicKeyInfo Flower registers."""
    try:
        key = (
            serialization.load_pem_public_key(public_key)
            if public_key.lstrip().startswith(b"-----")
            else serialization.load_ssh_public_key(public_key)
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            "a node public key is neither an OpenSSH line nor PEM: use the bytes node_auth_keypair returned"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError("a node public key is not an elliptic-curve key: use the bytes node_auth_keypair returned")
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
