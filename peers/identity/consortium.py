"""The consortium operations behind the CLI: create the CA, request and grant membership.

Files. A consortium directory holds `ca.key` (0600), `ca.pem` and `manifest.json`. A
member's identity directory holds `peer.key` (0600), `peer.csr` (its request), and,
once admitted, `peer.pem`, plus copies of the consortium's `ca.pem` and
`manifest.json` (the manifest is public: hand the new version to every member after an
admission or a removal). `Identity.load` reads a member's directory and checks that its
certificate is the CA's and is in the manifest; a running daemon picks up a newer
manifest version as soon as it is copied into its identity directory, and never goes
back to an older one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedsilo.errors import FedsiloError
from fedsilo.peers.errors import IdentityError
from fedsilo.peers.identity.manifest import Manifest, Member
from fedsilo.peers.identity.pki import (
    certificate_fingerprint,
    certificate_name,
    check_issued_by,
    check_name,
    create_ca,
    create_request,
    issue_certificate,
    load_certificate,
    load_private_key,
    load_request,
    new_private_key,
    request_name,
    write_private_key,
)

CA_KEY, CA_CERT, MANIFEST = "ca.key", "ca.pem", "manifest.json"
PEER_KEY, PEER_CSR, PEER_CERT = "peer.key", "peer.csr", "peer.pem"


def init_consortium(directory: Path, name: str) -> Manifest:
    """Create the root CA key and certificate and an empty signed manifest (version 1)."""
    check_name(name, "consortium name")
    if (directory / CA_KEY).exists() or (directory / MANIFEST).exists():
        raise IdentityError(f"{directory} already holds a consortium: choose an empty directory")
    key = new_private_key()
    write_private_key(directory / CA_KEY, key)
    (directory / CA_CERT).write_bytes(create_ca(name, key).public_bytes(serialization.Encoding.PEM))
    manifest = Manifest(name, 1, (), "")
    manifest.write(directory / MANIFEST, key)
    return Manifest.load(directory / MANIFEST, load_certificate(directory / CA_CERT))


def init_peer(directory: Path, name: str) -> Path:
    """Create a member's key (0600) and its certificate request; returns the request's path."""
    check_name(name, "peer name")
    key = new_private_key()
    write_private_key(directory / PEER_KEY, key)
    path = directory / PEER_CSR
    path.write_bytes(create_request(name, key).public_bytes(serialization.Encoding.PEM))
    return path


def admit(
    consortium_dir: Path,
    request: Path,
    roles: tuple[str, ...],
    address: str | None,
    certificate_out: Path,
    node_public_key: str | None = None,
) -> Member:
    """Sign `request`, add the member to the manifest (a new signed version), write its certificate."""
    ca_key = load_private_key(consortium_dir / CA_KEY)
    ca_cert = load_certificate(consortium_dir / CA_CERT)
    manifest = Manifest.load(consortium_dir / MANIFEST, ca_cert)
    csr = load_request(request)
    name = request_name(csr)
    if manifest.member(name) is not None:
        raise IdentityError(f"{name} is already a member of {manifest.consortium}")
    if certificate_out.exists():
        raise IdentityError(f"{certificate_out} already exists: remove it or give another --out")
    cert = issue_certificate(csr, ca_key, ca_cert, manifest.consortium, address)
    member = Member(
        name=name,
        fingerprint=certificate_fingerprint(cert),
        roles=roles,
        address=address,
        node_public_key=node_public_key,
    )
    updated = manifest.with_member(member)
    certificate_out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    updated.write(consortium_dir / MANIFEST, ca_key)
    return member


def remove(consortium_dir: Path, name: str) -> Manifest:
    """Take `name` out of the manifest (a new signed version); returns the new manifest.

    Its certificate stays signed by the CA but is refused by every peer that holds the
    new manifest: membership is the manifest, not the certificate (there is no CRL).
    """
    ca_key = load_private_key(consortium_dir / CA_KEY)
    manifest = Manifest.load(consortium_dir / MANIFEST, load_certificate(consortium_dir / CA_CERT))
    updated = manifest.without_member(name)
    updated.write(consortium_dir / MANIFEST, ca_key)
    return updated


@dataclass
class Identity:
    """A member's own key and certificate, the CA and the verified manifest.

    `ca_path`, `cert_path` and `key_path` are what TLS contexts load; `key` signs.
    """

    name: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    ca_certificate: x509.Certificate
    manifest: Manifest
    key_path: Path
    cert_path: Path
    ca_path: Path
    manifest_path: Path
    _manifest_stamp: int = 0

    @classmethod
    def load(cls, directory: Path, ca: Path | None = None, manifest: Path | None = None) -> Identity:
        directory = Path(directory)
        ca_path, manifest_path = ca or directory / CA_CERT, manifest or directory / MANIFEST
        cert_path = directory / PEER_CERT
        if not cert_path.exists():
            raise IdentityError(
                f"{cert_path} does not exist: have the consortium admit {directory / PEER_CSR} "
                "(`fedsilo consortium admit`) and put the certificate there"
            )
        key = load_private_key(directory / PEER_KEY)
        cert, ca_cert = load_certificate(cert_path), load_certificate(ca_path)
        check_issued_by(cert, ca_cert)
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            raise IdentityError(f"{cert_path} does not belong to the key {directory / PEER_KEY}")
        loaded = Manifest.load(manifest_path, ca_cert)
        name = certificate_name(cert)
        member = loaded.by_fingerprint(certificate_fingerprint(cert))
        if member is None or member.name != name:
            raise IdentityError(
                f"{name} is not in the manifest {manifest_path}: copy the consortium's latest manifest.json there"
            )
        return cls(
            name,
            key,
            cert,
            ca_cert,
            loaded,
            directory / PEER_KEY,
            cert_path,
            ca_path,
            manifest_path,
            manifest_path.stat().st_mtime_ns,
        )

    def reload_manifest(self) -> Manifest:
        """Re-read the manifest file; keep the current one if the file does not verify or is older.

        A newer version (an admission, a removal) replaces the current manifest; an older
        version (a stale copy put back) is ignored, so a removed member cannot be let in
        again by rolling the file back.
        """
        try:
            loaded = Manifest.load(self.manifest_path, self.ca_certificate)
        except FedsiloError:
            return self.manifest
        if loaded.consortium == self.manifest.consortium and loaded.version > self.manifest.version:
            self.manifest = loaded
        return self.manifest

    def current_manifest(self) -> Manifest:
        """The manifest, re-read when its file changed since the last read (one stat otherwise)."""
        try:
            stamp = self.manifest_path.stat().st_mtime_ns
        except OSError:
            return self.manifest
        if stamp != self._manifest_stamp:
            self._manifest_stamp = stamp
            self.reload_manifest()
        return self.manifest
