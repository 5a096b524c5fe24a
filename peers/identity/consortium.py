"""The consortium operations behind the CLI: create the CA, request and grant membership.

Files. A consortium directory holds `ca.key` (0600), `ca.pem` and `manifest.json`, and
under the gm suite the CA's SM2 signing key `ca-signing.key` (0600) and its public key
`ca-signing.pub`, the manifest's second trust anchor. A member's identity directory holds
`peer.key` (0600), `peer.csr` (its request), and, once admitted, `peer.pem`, plus copies of
the consortium's `ca.pem` (and `ca-signing.pub` under gm), `manifest.json` and `crl.pem`.

The CA also writes `crl.pem`, its certificate revocation list (`revocation`), with every
manifest version, and keeps a copy of each certificate it issues (`issued/NAME.pem`) so that
a removal can revoke it. A consortium directory made before revocation lists gets its first
CRL the next time the CA writes or publishes (`ensure_crl`); a member admitted before then has
no copy here, and its removal needs its certificate (`remove(..., certificate=)`).

`publication` is what the consortium publishes (the signed manifest document and the CRL): the
CA operator hands it to any one member daemon (`fedsilo consortium publish`), the daemons fetch
it from each other, and `Identity.accept` verifies it, refuses a rollback, and writes both files
atomically. `Identity.load` reads a member's directory and checks that its certificate is the
CA's and is in the manifest; a running daemon also picks up a newer manifest version copied
into its identity directory by hand, and never goes back to an older one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedsilo.errors import CryptoSuiteError, FedsiloError
from fedsilo.peers.errors import IdentityError
from fedsilo.peers.identity import revocation
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
CRL = revocation.CRL
ISSUED = "issued"  # the CA's copies of the certificates it issued, one NAME.pem each
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
    _write_version(directory, manifest, key, suite_key, [])
    return load_manifest(directory / MANIFEST, directory / CA_CERT)


def _write_version(
    directory: Path, manifest: Manifest, ca_key: ec.EllipticCurvePrivateKey, suite_key: bytes | None, revoked: list[int]
) -> None:
    """Write the CRL numbered `manifest.version` revoking `revoked`, then the signed manifest (both atomically)."""
    ca_cert = load_certificate(directory / CA_CERT)
    previous = revocation.load(directory / CRL, ca_cert)
    revocation.write(directory / CRL, revocation.issue(ca_key, ca_cert, manifest.version, revoked, previous))
    manifest.write(directory / MANIFEST, ca_key, suite_key)


def ensure_crl(directory: Path) -> bool:
    """Issue the first CRL of a consortium directory made before revocation lists; True if one was issued."""
    if (directory / CRL).exists():
        return False
    ca_key, ca_cert = load_private_key(directory / CA_KEY), load_certificate(directory / CA_CERT)
    manifest = load_manifest(directory / MANIFEST, directory / CA_CERT)
    revocation.write(directory / CRL, revocation.issue(ca_key, ca_cert, manifest.version, []))
    return True


def _revoked(directory: Path) -> list[int]:
    crl = revocation.load(directory / CRL, load_certificate(directory / CA_CERT))
    return revocation.serials(crl) if crl is not None else []


def publication(directory: Path) -> dict[str, Any]:
    """What the consortium publishes: {"manifest": the signed manifest document, "crl": the CRL's PEM}.

    Issues the first CRL of an older consortium directory (`ensure_crl`)."""
    ensure_crl(directory)
    load_manifest(directory / MANIFEST, directory / CA_CERT)  # refuse to publish a manifest that does not verify
    return {"manifest": json.loads((directory / MANIFEST).read_text()), "crl": (directory / CRL).read_text()}


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
    ensure_crl(consortium_dir)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (consortium_dir / ISSUED).mkdir(exist_ok=True)
    (consortium_dir / ISSUED / f"{name}.pem").write_bytes(pem)
    certificate_out.write_bytes(pem)
    _write_version(consortium_dir, updated, ca_key, suite_key, _revoked(consortium_dir))
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


def remove(consortium_dir: Path, name: str, certificate: Path | None = None) -> Manifest:
    """Take `name` out of the manifest and revoke its certificate (a new signed version and CRL).

    The certificate is the CA's copy `issued/NAME.pem`, or `certificate` (the member's peer.pem)
    for a member admitted before the CA kept copies; either must be the one the manifest names.
    """
    ca_key = load_private_key(consortium_dir / CA_KEY)
    manifest = load_manifest(consortium_dir / MANIFEST, consortium_dir / CA_CERT)
    updated = manifest.without_member(name)
    member = manifest.member(name)
    assert member is not None
    path = certificate or consortium_dir / ISSUED / f"{name}.pem"
    if not path.exists():
        raise IdentityError(
            f"the CA holds no copy of {name}'s certificate ({path} does not exist: {name} was admitted before "
            f"fedsilo kept one): give its certificate with --certificate PATH (its peer.pem) so it can be revoked"
        )
    cert = load_certificate(path)
    if certificate_fingerprint(cert) != member.fingerprint:
        raise IdentityError(f"{path} is not the certificate the manifest names for {name}: give its peer.pem")
    ensure_crl(consortium_dir)
    revoked = [*_revoked(consortium_dir), cert.serial_number]
    _write_version(consortium_dir, updated, ca_key, _ca_suite_key(consortium_dir, manifest), revoked)
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
    crl: x509.CertificateRevocationList | None = None

    @property
    def crl_path(self) -> Path:
        """The CRL beside the manifest (`crl.pem`); it may not exist (an identity from before CRLs)."""
        return self.manifest_path.with_name(CRL)

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
        crl = revocation.load(manifest_path.with_name(CRL), ca_cert)
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
            crl,
        )

    def publication(self) -> dict[str, Any]:
        """The latest signed manifest this member holds, with its CRL (None before CRLs), as `publication`."""
        self.current_manifest()
        return {
            "manifest": json.loads(self.manifest_path.read_text()),
            "crl": revocation.to_pem(self.crl) if self.crl is not None else None,
        }

    def accept(self, published: Any, sender: str) -> bool:
        """Verify a publication from `sender` and, if it is a newer version, write it here; True if it was.

        The manifest must verify against the CA (and its SM2 key under gm), name this consortium and
        suite, and carry the CA's CRL numbered with its version, later than the CRL held and revoking
        everything it revokes. The same version with the same body changes nothing (False), except that
        it brings the first CRL to an identity that had none. IdentityError, naming what is wrong, for an
        older version (a rollback), the same version with other content, a bad signature or CRL; nothing
        is written then. The CRL is written before the manifest, each atomically.
        """
        current = self.current_manifest()
        if not isinstance(published, dict) or "manifest" not in published:
            raise IdentityError(f"what {sender} sent is not a manifest publication ({{'manifest': ..., 'crl': ...}})")
        where = f"from {sender}"
        loaded = Manifest.from_document(published["manifest"], self.ca_certificate, ca_anchor(self.ca_path), where)
        if loaded.consortium != current.consortium or loaded.suite != current.suite:
            raise IdentityError(
                f"the manifest {where} is of consortium {loaded.consortium} ({loaded.suite} suite); this member is in "
                f"{current.consortium} ({current.suite} suite): refused"
            )
        if loaded.version < current.version:
            raise IdentityError(
                f"the manifest {where} is version {loaded.version}, older than version {current.version} held here: "
                "a manifest never rolls back (a removed member could come back); refused"
            )
        same = loaded.version == current.version
        if same and loaded.body() != current.body():
            raise IdentityError(
                f"the manifest {where} is version {loaded.version}, the version held here, with other content: two "
                "different manifests of one version cannot both be the CA's intent; refused, the held one is kept"
            )
        crl_pem = published.get("crl")
        if crl_pem is None:
            if same:
                return False
            raise IdentityError(
                f"the manifest version {loaded.version} {where} comes without the CA's revocation list (crl): a new "
                "version is accepted only with its CRL; publish it with `fedsilo consortium publish`"
            )
        crl = revocation.parse(crl_pem, self.ca_certificate, f"the revocation list {where}")
        if revocation.number(crl) != loaded.version:
            raise IdentityError(
                f"the revocation list {where} is number {revocation.number(crl)}, not the manifest's version "
                f"{loaded.version}: the CA issues one with every version; refused"
            )
        if self.crl is not None:
            if same and revocation.number(self.crl) >= loaded.version:
                return False
            if crl.last_update_utc <= self.crl.last_update_utc or not set(revocation.serials(self.crl)) <= set(
                revocation.serials(crl)
            ):
                raise IdentityError(
                    f"the revocation list {where} is not later than the one held here or un-revokes a certificate: "
                    "refused"
                )
        revocation.write(self.crl_path, crl)
        self.crl = crl
        if not same:
            tmp = self.manifest_path.with_name(self.manifest_path.name + ".tmp")
            tmp.write_text(json.dumps(published["manifest"], indent=2) + "\n")
            tmp.replace(self.manifest_path)
            self.manifest = loaded
            self._manifest_stamp = self.manifest_path.stat().st_mtime_ns
        return True

    def reload_manifest(self) -> Manifest:
        """Re-read the manifest file; keep the current one if the file does not verify or is older.

        A newer version (an admission, a removal) replaces the current manifest; an older
        version (a stale copy put back) is ignored, so a removed member cannot be let in
        again by rolling the file back. A version naming another crypto suite is ignored too:
        the suite is chosen once, at `consortium init`; so is, under gm, a version whose SM2
        signature (`suite_signature`) is missing or not the CA's. A newer version brings the
        `crl.pem` copied beside it, if that is the CA's and later than the CRL held.
        """
        try:
            loaded = Manifest.load(self.manifest_path, self.ca_certificate, ca_anchor(self.ca_path))
        except FedsiloError:
            return self.manifest
        same = loaded.consortium == self.manifest.consortium and loaded.suite == self.manifest.suite
        if same and loaded.version > self.manifest.version:
            self.manifest = loaded
            self._reload_crl()
        return self.manifest

    def _reload_crl(self) -> None:
        """Take the CRL file copied in with a newer manifest, if it is the CA's and later than the one held."""
        try:
            crl = revocation.load(self.crl_path, self.ca_certificate)
        except FedsiloError:
            return
        if crl is not None and (self.crl is None or crl.last_update_utc > self.crl.last_update_utc):
            self.crl = crl

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
