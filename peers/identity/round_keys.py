"""A peer's consortium identity as SecAgg+ uses it: sign the round's keys, verify the neighbours'.

`CertificateSigner` signs with the member's own key (`peer.key`, ECDSA P-256 with
SHA-256); its credential is the member's certificate (DER, public). `ManifestVerifier`
accepts a credential only if the certificate is signed by the consortium CA, valid now,
and listed with the role 'peer' under its own name in the CA-signed manifest, and then
checks the signature with the certificate's key; it returns the member's name. They are
the `fedsilo.privacy.secagg.auth` Signer and Verifier of every deployed and simulated peer.

In a consortium of another crypto suite (gm) the certificate still names the member, but
the signature is the member's suite signature (SM2 with its `signing.key`), checked against
the signing key the manifest binds to that member; an ECDSA signature is refused there.
`ManifestVerifier.suite` is the suite the round's SecAgg+ runs under (the manifest's).

The private key is read from the peer's own disk (`load_round_identity`), never from a
message. `simulated_consortium` writes a real CA, manifest and one key and
certificate per bank for simulations, so they run the same checks at the same cost.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedsilo.errors import CryptoSuiteError
from fedsilo.peers.errors import IdentityError
from fedsilo.peers.identity.manifest import CA_SIGNING_KEY, CA_SIGNING_PUB, Manifest, Member
from fedsilo.peers.identity.pki import (
    certificate_fingerprint,
    certificate_name,
    check_issued_by,
    create_ca,
    create_request,
    issue_certificate,
    load_certificate,
    load_private_key,
    new_private_key,
    write_private_key,
    write_secret,
)
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE, get_suite

_ECDSA = ec.ECDSA(hashes.SHA256())
CA_FILE, MANIFEST_FILE = "ca.pem", "manifest.json"
SIMULATED_IDENTITY_KEY = "simulation.identity-dir"  # run config: a simulated consortium's directory
SUITE_KEY = "consortium.suite"  # run config: the consortium's crypto suite, for the host's ServerApp


@dataclass(frozen=True)
class IdentityFiles:
    """Where a peer keeps its consortium identity: its key, its certificate, the CA, the manifest."""

    key: Path
    cert: Path
    ca_cert: Path
    manifest: Path
    signing_key: Path | None = None  # the member's suite signing key (every member of a gm consortium)

    def node_config(self) -> dict[str, str]:
        """The SuperNode node-config entries the ClientApp reads them from (`fedsilo.peers.client.mods.secagg`)."""
        entries = {
            "identity-key": str(self.key),
            "identity-cert": str(self.cert),
            "ca-cert": str(self.ca_cert),
            "manifest": str(self.manifest),
        }
        if self.signing_key is not None:
            entries["signing-key"] = str(self.signing_key)
        return entries


class CertificateSigner:
    """Signs with the member's own key; the credential is its certificate (DER).

    With `suite_key` (the suite's name and the member's signing key, PKCS#8 DER) it signs
    with that key instead (SM2 in a gm consortium).
    """

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate,
        suite_key: tuple[str, bytes] | None = None,
    ) -> None:
        if certificate.public_key().public_numbers() != key.public_key().public_numbers():
            raise IdentityError(f"the certificate of {certificate_name(certificate)!r} does not belong to its key")
        self.name = certificate_name(certificate)
        self._key = key
        self._suite_key = (get_suite(suite_key[0]), suite_key[1]) if suite_key is not None else None
        self._credential = certificate.public_bytes(serialization.Encoding.DER)

    @property
    def credential(self) -> bytes:
        return self._credential

    def sign(self, transcript: bytes) -> bytes:
        if self._suite_key is not None:
            suite, private = self._suite_key
            return suite.sign(private, transcript)
        return self._key.sign(transcript, _ECDSA)


class ManifestVerifier:
    """The consortium's peers, as its CA-signed manifest lists them (see the module docstring)."""

    def __init__(self, manifest: Manifest, ca_certificate: x509.Certificate) -> None:
        self.manifest = manifest
        self.ca = ca_certificate  # the consortium CA that issues every admitted certificate
        self._admitted: dict[bytes, tuple[str, ec.EllipticCurvePublicKey | bytes]] = {}

    @property
    def suite(self) -> str:
        """The consortium's crypto suite, as its manifest records it."""
        return self.manifest.suite

    def _admit(self, credential: bytes) -> tuple[str, ec.EllipticCurvePublicKey | bytes]:
        known = self._admitted.get(credential)
        if known is not None:
            return known
        try:
            cert = x509.load_der_x509_certificate(credential)
            name = certificate_name(cert)
            check_issued_by(cert, self.ca)
        except (ValueError, TypeError) as error:
            raise ValueError(f"the credential is not a certificate ({error})") from None
        except IdentityError as error:
            raise ValueError(str(error)) from None
        member = self.manifest.by_fingerprint(certificate_fingerprint(credential))
        if member is None or member.name != name or not member.has("peer"):
            raise ValueError(f"{name!r} is not a peer in the consortium's manifest (version {self.manifest.version})")
        key: ec.EllipticCurvePublicKey | bytes
        if self.suite != DEFAULT_SUITE:
            if member.signing_key is None:
                raise ValueError(f"{name!r} has no {self.suite} signing key in the consortium's manifest")
            key = bytes.fromhex(member.signing_key)
        else:
            key = cert.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError(f"the certificate of {name!r} does not hold an EC key")
        self._admitted[credential] = (name, key)
        return name, key

    def verify(self, credential: bytes, signature: bytes, transcript: bytes) -> str:
        name, key = self._admit(credential)
        if isinstance(key, bytes):
            try:
                get_suite(self.suite).verify(key, transcript, signature)
            except CryptoSuiteError:
                raise ValueError(
                    f"the signature is not the {self.suite}-suite signature of {name!r} "
                    f"(by the signing key the manifest binds to it)"
                ) from None
            return name
        try:
            key.verify(signature, transcript, _ECDSA)
        except (InvalidSignature, TypeError, ValueError):
            raise ValueError(f"the signature is not {name!r}'s") from None
        return name


def load_round_identity(
    key_path: Path, cert_path: Path, ca_path: Path, manifest_path: Path, signing_key_path: Path | None = None
) -> tuple[CertificateSigner, ManifestVerifier]:
    """This peer's signer and the consortium's verifier, from the peer's own files.

    IdentityError if a file is missing, the certificate is not the CA's or not this
    key's, or the manifest does not list it; in a consortium of another suite (gm), also
    if `signing_key_path` is not given or is not the signing key the manifest binds to
    this peer. Cached per files and their modification
    times (a new manifest version is picked up, an unchanged one is not re-verified),
    the verifier once per consortium, so the many banks of a simulation share it.
    """
    named = (key_path, cert_path, ca_path, manifest_path) + ((signing_key_path,) if signing_key_path else ())
    paths = tuple(Path(p).resolve() for p in named)
    try:
        stamps = tuple(p.stat().st_mtime_ns for p in paths)
    except FileNotFoundError as missing:
        raise IdentityError(
            f"this peer's consortium identity is incomplete: {missing.filename} does not exist"
        ) from None
    anchor = paths[2].with_name(CA_SIGNING_PUB)
    anchor_stamp = anchor.stat().st_mtime_ns if anchor.exists() else 0
    verifier = _verifier(paths[2], paths[3], (*stamps[2:4], anchor_stamp))
    signing = (paths[4], stamps[4]) if len(paths) > 4 else None
    signer = _signer(paths[0], paths[1], stamps[:2], verifier, signing)
    return signer, verifier


@functools.lru_cache(maxsize=4)
def _verifier(ca_path: Path, manifest_path: Path, _stamps: tuple[int, ...]) -> ManifestVerifier:
    ca = load_certificate(ca_path)
    return ManifestVerifier(Manifest.load(manifest_path, ca, ca_path.with_name(CA_SIGNING_PUB)), ca)


@functools.lru_cache(maxsize=4096)
def _signer(
    key_path: Path,
    cert_path: Path,
    _stamps: tuple[int, ...],
    verifier: ManifestVerifier,
    signing: tuple[Path, int] | None = None,
) -> CertificateSigner:
    cert = load_certificate(cert_path)
    check_issued_by(cert, verifier.ca)
    name = certificate_name(cert)
    member = verifier.manifest.by_fingerprint(certificate_fingerprint(cert))
    if member is None or member.name != name:
        raise IdentityError(
            f"{name} is not in the consortium's manifest: copy the consortium's latest manifest.json to this peer"
        )
    suite = verifier.suite
    if suite == DEFAULT_SUITE:
        return CertificateSigner(load_private_key(key_path), cert)
    if signing is None:
        raise IdentityError(
            f"consortium {verifier.manifest.consortium} uses the {suite} crypto suite: {name} signs its "
            f"secure-aggregation keys with its {suite} signing key; name its signing.key (node config `signing-key`)"
        )
    private = signing[0].read_bytes()
    try:
        public = get_suite(suite).signing_public_key(private).hex()
    except CryptoSuiteError as exc:
        raise IdentityError(f"{signing[0]} of {name} is not a {suite} signing key ({exc})") from None
    if public != member.signing_key:
        raise IdentityError(f"{signing[0]} is not the {suite} signing key the manifest binds to {name}")
    return CertificateSigner(load_private_key(key_path), cert, (suite, private))


def bank_member(index: int) -> str:
    return f"bank-{index:05d}"


def simulated_consortium(
    directory: Path, banks: int, consortium: str = "simulated", suite: str = DEFAULT_SUITE
) -> Path:
    """A CA, a signed manifest and one key and certificate per bank, in `directory` (simulations).

    Under another `suite` (gm) each bank also gets that suite's signing key (`NAME.signing.key`),
    bound to it in the manifest, as `fedsilo consortium admit --signing-key` does, and the CA a
    suite key (`ca-signing.key`) that also signs the manifest, its anchor `ca-signing.pub` beside `ca.pem`.
    """
    crypto = get_suite(suite)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = new_private_key()
    ca = create_ca(consortium, ca_key)
    (directory / CA_FILE).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    members = []
    for index in range(banks):
        name = bank_member(index)
        key = new_private_key()
        address = f"https://{name}.invalid:443"
        cert = issue_certificate(create_request(name, key), ca_key, ca, consortium, address)
        write_private_key(directory / f"{name}.key", key)
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        signing_key = None
        if suite != DEFAULT_SUITE:
            private = crypto.generate_signing_key()
            write_secret(directory / f"{name}.signing.key", private)
            signing_key = crypto.signing_public_key(private).hex()
        fingerprint = certificate_fingerprint(cert)
        members.append(
            Member(name=name, fingerprint=fingerprint, roles=("peer",), address=address, signing_key=signing_key)
        )
    ca_suite_key = None
    if suite != DEFAULT_SUITE:
        ca_suite_key = crypto.generate_signing_key()
        write_secret(directory / CA_SIGNING_KEY, ca_suite_key)
        (directory / CA_SIGNING_PUB).write_text(crypto.signing_public_key(ca_suite_key).hex() + "\n")
    Manifest(consortium, 1, tuple(members), "", suite).write(directory / MANIFEST_FILE, ca_key, ca_suite_key)
    return directory


def simulated_files(directory: Path, bank: int) -> IdentityFiles:
    """Bank `bank`'s identity files in a `simulated_consortium` in `directory`."""
    name = bank_member(bank)
    signing = directory / f"{name}.signing.key"
    return IdentityFiles(
        directory / f"{name}.key",
        directory / f"{name}.pem",
        directory / CA_FILE,
        directory / MANIFEST_FILE,
        signing if signing.exists() else None,
    )


def simulated_identity(directory: Path, bank: int) -> tuple[CertificateSigner, ManifestVerifier]:
    """Bank `bank`'s signer and the verifier of a `simulated_consortium` in `directory`."""
    files = simulated_files(directory, bank)
    return load_round_identity(files.key, files.cert, files.ca_cert, files.manifest, files.signing_key)


def simulated_verifier(directory: Path) -> ManifestVerifier:
    """The verifier alone (the simulated host's), from a `simulated_consortium` in `directory`."""
    files = simulated_files(directory, 0)
    return _verifier(
        files.ca_cert.resolve(),
        files.manifest.resolve(),
        (files.ca_cert.stat().st_mtime_ns, files.manifest.stat().st_mtime_ns),
    )
