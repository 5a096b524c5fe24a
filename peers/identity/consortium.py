"""The consortium operations behind the CLI: create the CA, request and grant membership.

Files. A consortium directory holds `ca.key` (0600), `ca.pem` and `manifest.json`, and
under the gm suite the CA's SM2 signing key `ca-signing.key` (0600) and its public key
`ca-signing.pub`, the manifest's second trust anchor. A member's identity directory holds
`peer.key` (0600), `peer.csr` (its request), and, once admitted, `peer.pem`, plus copies of
the consortium's `ca.pem` (and `ca-signing.pub` under gm) and `manifest.json` (the manifest
is public: hand the new version to every member after an admission or a removal).
`Identity.load` reads a member's directory and checks that its certificate is the CA's and
is in the manifest; a running daemon picks up a newer
manifest version as soon as it is copied into its identity directory, and never goes
back to an older one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedsilo.errors import CryptoSuiteError, FedsiloError
from fedsilo.peers.errors import IdentityError
from fedsilo.peers.identity.manifest import CA_SIGNING_KEY, CA_SIGNING_PUB, Manifest, Member, check_signing_key
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
    write_secret,
)
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE, SUITES, get_suite

CA_KEY, CA_CERT, MANIFEST = "ca.key", "ca.pem", "manifest.json"
PEER_KEY, PEER_CSR, PEER_CERT = "peer.key", "peer.csr", "peer.pem"
# A member's crypto-suite signing key (PKCS#8 DER, 0600) and its public key (hex of the point).
SIGNING_KEY, SIGNING_PUB = "signing.key", "signing.pub"


def init_consortium(directory: Path, name: str, suite: str = DEFAULT_SUITE) -> Manifest:
    """Create the root CA key and certificate and an empty signed manifest (version 1) recording `suite`."""
    check_name(name, "consortium name")
    if suite not in SUITES:
        raise IdentityError(f"unknown crypto suite {suite!r}: choose one of {', '.join(SUITES)}")
    if (directory / CA_KEY).exists() or (directory / MANIFEST).exists():
        raise IdentityError(f"{directory} already holds a consortium: choose an empty directory")
    key = new_private_key()
    write_private_key(directory / CA_KEY, key)
    (directory / CA_CERT).write_bytes(create_ca(name, key).public_bytes(serialization.Encoding.PEM))
    suite_key = None
    if suite != DEFAULT_SUITE:
        crypto = get_suite(suite)
        suite_key = crypto.generate_signing_key()
        write_secret(directory / CA_SIGNING_KEY, suite_key)
        (directory / CA_SIGNING_PUB).write_text(crypto.signing_public_key(suite_key).hex() + "\n")
    manifest = Manifest(name, 1, (), "", suite)
    manifest.write(directory / MANIFEST, key, suite_key)
    return load_manifest(directory / MANIFEST, directory / CA_CERT)


def load_manifest(manifest_path: Path, ca_path: Path) -> Manifest:
    """The manifest at `manifest_path`, verified against `ca_path` and the trust anchor beside it."""
    return Manifest.load(manifest_path, load_certificate(ca_path), ca_anchor(ca_path))


def ca_anchor(ca_path: Path) -> Path:
    """Where the CA's suite signing key's public key (`ca-signing.pub`) lies: beside `ca.pem`."""
    return Path(ca_path).with_name(CA_SIGNING_PUB)


def _ca_suite_key(consortium_dir: Path, manifest: Manifest) -> bytes | None:
    """The CA's suite signing key (None under the standard suite); IdentityError if it is missing."""
    if manifest.suite == DEFAULT_SUITE:
        return None
    path = consortium_dir / CA_SIGNING_KEY
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(
            f"{manifest.consortium} uses the {manifest.suite} crypto suite but {path}, the CA's {manifest.suite} "
            "signing key made by `fedsilo consortium init`, does not exist: restore it from the CA's backup"
        ) from None


def init_peer(directory: Path, name: str, suite: str | None = None) -> Path:
    """Create a member's key (0600) and its certificate request; returns the request's path.

    With `suite`, also a signing key of that crypto suite (`signing.key`, 0600) and its public
    key (`signing.pub`), which the consortium binds to the member at admission (`--signing-key`).
    """
    check_name(name, "peer name")
    try:
        chosen = get_suite(suite) if suite is not None else None
    except CryptoSuiteError as exc:
        raise IdentityError(str(exc)) from None
    key = new_private_key()
    write_private_key(directory / PEER_KEY, key)
    if chosen is not None:
        signing = chosen.generate_signing_key()
        write_secret(directory / SIGNING_KEY, signing)
        (directory / SIGNING_PUB).write_text(chosen.signing_public_key(signing).hex() + "\n")
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
    signing_key: Path | None = None,
) -> Member:
    """Sign `request`, add the member to the manifest (a new signed version), write its certificate.

    `signing_key` is the member's `signing.pub` (from `fedsilo peer init --suite`): it must be a
    key of the consortium's suite, and a gm consortium admits no member without one.
    """
    ca_key = load_private_key(consortium_dir / CA_KEY)
    ca_cert = load_certificate(consortium_dir / CA_CERT)
    manifest = Manifest.load(consortium_dir / MANIFEST, ca_cert, ca_anchor(consortium_dir / CA_CERT))
    suite_key = _ca_suite_key(consortium_dir, manifest)
    csr = load_request(request)
    name = request_name(csr)
    if manifest.member(name) is not None:
        raise IdentityError(f"{name} is already a member of {manifest.consortium}")
    if certificate_out.exists():
        raise IdentityError(f"{certificate_out} already exists: remove it or give another --out")
    public = _read_signing_pub(signing_key) if signing_key is not None else None
    if public is None and manifest.suite != DEFAULT_SUITE:
        raise IdentityError(
            f"{manifest.consortium} uses the {manifest.suite} crypto suite: {name} must create a {manifest.suite} "
            f"signing key (`fedsilo peer init --suite {manifest.suite}`) and you admit it with --signing-key signing.pub"
        )
    if public is not None:
        check_signing_key(name, public, manifest.suite)
    cert = issue_certificate(csr, ca_key, ca_cert, manifest.consortium, address)
    member = Member(
        name=name,
        fingerprint=certificate_fingerprint(cert),
        roles=roles,
        address=address,
        node_public_key=node_public_key,
        signing_key=public,
    )
    updated = manifest.with_member(member)
    certificate_out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    updated.write(consortium_dir / MANIFEST, ca_key, suite_key)
    return member


def _read_signing_pub(path: Path) -> str:
    try:
        text = path.read_text().strip().lower()
    except OSError as exc:
        raise IdentityError(f"cannot read the member's signing key {path}: {exc.strerror}") from None
    if not text or any(c not in "0123456789abcdef" for c in text):
        raise IdentityError(f"{path} is not a signing.pub file (hex of a public key, from `fedsilo peer init --suite`)")
    return text


def _load_signing_key(directory: Path, member: Member, suite: str) -> bytes | None:
    """The member's suite signing key if the manifest binds one; IdentityError if absent or not that key."""
    if member.signing_key is None:
        return None
    path = directory / SIGNING_KEY
    try:
        private = path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(
            f"the manifest binds a {suite} signing key to {member.name} but {path} does not exist: "
            "put the signing.key made by `fedsilo peer init --suite` there"
        ) from None
    try:
        public = get_suite(suite).signing_public_key(private).hex()
    except CryptoSuiteError as exc:
        raise IdentityError(f"{path} of {member.name} is not a {suite} signing key ({exc})") from None
    if public != member.signing_key:
        raise IdentityError(
            f"{path} is not the {suite} signing key the manifest binds to {member.name}: use the key whose "
            "signing.pub the consortium admitted"
        )
    return private


def remove(consortium_dir: Path, name: str) -> Manifest:
    """Take `name` out of the manifest (a new signed version); returns the new manifest.

    Its certificate stays signed by the CA but is refused by every peer that holds the
    new manifest: membership is the manifest, not the certificate (there is no CRL).
    """
    ca_key = load_private_key(consortium_dir / CA_KEY)
    manifest = load_manifest(consortium_dir / MANIFEST, consortium_dir / CA_CERT)
    updated = manifest.without_member(name)
    updated.write(consortium_dir / MANIFEST, ca_key, _ca_suite_key(consortium_dir, manifest))
    return updated


@dataclass
class Identity:
    """A member's own key and certificate, the CA and the verified manifest.

    `ca_path`, `cert_path` and `key_path` are what TLS contexts load; `key` signs.
    `signing_key` is the member's crypto-suite signing key (PKCS#8 DER) when the manifest
    binds one to it (every member of a gm consortium); `load` refuses a directory whose
    `signing.key` is missing or is not the key the manifest names.
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
    signing_key: bytes | None = None

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
        loaded = Manifest.load(manifest_path, ca_cert, ca_anchor(ca_path))
        name = certificate_name(cert)
        member = loaded.by_fingerprint(certificate_fingerprint(cert))
        if member is None or member.name != name:
            raise IdentityError(
                f"{name} is not in the manifest {manifest_path}: copy the consortium's latest manifest.json there"
            )
        signing_key = _load_signing_key(directory, member, loaded.suite)
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
            signing_key,
        )

    def reload_manifest(self) -> Manifest:
        """Re-read the manifest file; keep the current one if the file does not verify or is older.

        A newer version (an admission, a removal) replaces the current manifest; an older
        version (a stale copy put back) is ignored, so a removed member cannot be let in
        again by rolling the file back. A version naming another crypto suite is ignored too:
        the suite is chosen once, at `consortium init`; so is, under gm, a version whose SM2
        signature (`suite_signature`) is missing or not the CA's.
        """
        try:
            loaded = Manifest.load(self.manifest_path, self.ca_certificate, ca_anchor(self.ca_path))
        except FedsiloError:
            return self.manifest
        same = loaded.consortium == self.manifest.consortium and loaded.suite == self.manifest.suite
        if same and loaded.version > self.manifest.version:
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
