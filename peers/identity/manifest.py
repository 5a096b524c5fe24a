"""The consortium manifest: who is a member, where it listens, which certificate it holds.

The manifest is a JSON file `{"manifest": {...}, "signature": "..."}` signed by the
consortium's root CA key. Each member has a name, an https address (peers) or none
(a model owner that only submits jobs and pulls models), the fingerprint of its
certificate, its roles, and optionally the public key its Flower SuperNode
authenticates with. Every peer loads it with the CA certificate and refuses it unless
the signature verifies: a member added or changed by hand is not a member.

The manifest also records the consortium's crypto suite (``standard`` or ``gm``, chosen at
`fedsilo consortium init --suite`; a manifest without the field is ``standard``) and, per
member, optionally the public key of its suite signing key (``signing_key``, hex of the
uncompressed point). Loading refuses an unknown suite and a member key that is not a key
of the recorded suite, naming the member.

The manifest is signed with the CA's ECDSA P-256 key under both suites. Under gm the CA also
holds an SM2 signing key (`ca-signing.key`, 0600, beside `ca.key`), whose public key
(`ca-signing.pub`, hex of the point) is a second trust anchor distributed with `ca.pem`; every
version it writes carries `suite_signature`, the CA's SM2 signature of the same canonical bytes.
`Manifest.load` under gm requires the anchor and refuses a manifest whose SM2 signature is
missing, made by another key or over other bytes, even when the ECDSA signature verifies; and with
an anchor present it refuses a manifest naming another suite (a downgrade by someone holding the
ECDSA key alone). A standard manifest is written and read byte for byte as before.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from fedsilo.errors import CryptoSuiteError
from fedsilo.peers.errors import IdentityError, SignatureError
from fedsilo.peers.identity.pki import address_host, check_name
from fedsilo.peers.identity.signing import sign_document, sign_with_suite, verify_document, verify_with_suite
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE, SUITES, get_suite

SCHEMA = "fedsilo.manifest/1"
# The CA's suite signing key (gm: SM2, PKCS#8 DER, 0600, beside ca.key) and its public key, the
# second trust anchor (hex of the point, beside ca.pem wherever ca.pem is copied).
CA_SIGNING_KEY, CA_SIGNING_PUB = "ca-signing.key", "ca-signing.pub"
ROLES = ("peer", "model-owner")


@dataclass(frozen=True)
class Member:
    """One admitted member. `roles` ⊆ ROLES; a 'peer' has an https address."""

    name: str
    fingerprint: str
    roles: tuple[str, ...]
    address: str | None = None
    node_public_key: str | None = None
    signing_key: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "member name")
        unknown = [r for r in self.roles if r not in ROLES]
        if unknown or not self.roles:
            raise IdentityError(f"roles {list(self.roles)} of {self.name}: each must be one of {', '.join(ROLES)}")
        if "peer" in self.roles and not self.address:
            raise IdentityError(f"{self.name} has the role 'peer' but no address: give --address https://HOST:PORT")
        if self.address:
            address_host(self.address)

    def has(self, role: str) -> bool:
        return role in self.roles

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["roles"] = list(self.roles)
        if data["signing_key"] is None:
            del data["signing_key"]  # manifests of members without a suite key keep their earlier bytes
        return data

    def check_suite(self, suite: str) -> None:
        """IdentityError naming this member unless its signing key (if any) is a public key of `suite`."""
        if self.signing_key is not None:
            check_signing_key(self.name, self.signing_key, suite)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Member:
        try:
            return cls(
                name=data["name"],
                fingerprint=data["fingerprint"],
                roles=tuple(data["roles"]),
                address=data.get("address"),
                node_public_key=data.get("node_public_key"),
                signing_key=data.get("signing_key"),
            )
        except (KeyError, TypeError) as exc:
            raise IdentityError(f"a manifest member is malformed ({exc})") from None


@dataclass(frozen=True)
class Manifest:
    """The signed member list of one consortium (immutable; `with_member` makes the next version)."""

    consortium: str
    version: int
    members: tuple[Member, ...] = field(default=())
    issued: str = ""
    suite: str = DEFAULT_SUITE

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise IdentityError(
                f"consortium {self.consortium}: unknown crypto suite {self.suite!r}; this fedsilo knows "
                f"{', '.join(SUITES)}"
            )
        for member in self.members:
            member.check_suite(self.suite)

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def by_fingerprint(self, fingerprint: str) -> Member | None:
        return next((m for m in self.members if m.fingerprint == fingerprint), None)

    def with_member(self, member: Member) -> Manifest:
        if self.member(member.name) is not None:
            raise IdentityError(
                f"{member.name} is already a member of {self.consortium}: choose another name for a new peer"
            )
        if self.by_fingerprint(member.fingerprint) is not None:
            raise IdentityError("this certificate is already admitted under another name")
        return Manifest(self.consortium, self.version + 1, (*self.members, member), _now(), self.suite)

    def without_member(self, name: str) -> Manifest:
        """The next version, without `name` (its certificate is then refused by every peer holding it)."""
        if self.member(name) is None:
            raise IdentityError(
                f"{name} is not a member of {self.consortium}; members: "
                f"{', '.join(m.name for m in self.members) or 'none'}"
            )
        remaining = tuple(m for m in self.members if m.name != name)
        return Manifest(self.consortium, self.version + 1, remaining, _now(), self.suite)

    def body(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "consortium": self.consortium,
            "version": self.version,
            "issued": self.issued,
            "suite": self.suite,
            "members": [m.to_dict() for m in self.members],
        }

    def write(self, path: Path, ca_key: ec.EllipticCurvePrivateKey, suite_key: bytes | None = None) -> None:
        """Sign with the CA key (and, outside the standard suite, the CA's `suite_key`) and write atomically."""
        body = self.body()
        document: dict[str, Any] = {"manifest": body, "signature": sign_document(ca_key, body)}
        if self.suite != DEFAULT_SUITE:
            if suite_key is None:
                raise IdentityError(
                    f"consortium {self.consortium} uses the {self.suite} crypto suite: its manifest is also signed "
                    f"with the CA's {self.suite} signing key ({CA_SIGNING_KEY} beside the CA key), which is missing"
                )
            document["suite_signature"] = sign_with_suite(self.suite, suite_key, body)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, ca_cert: x509.Certificate, anchor: Path | None = None) -> Manifest:
        """Read and verify a manifest; IdentityError if unreadable, SignatureError if not the CA's.

        `anchor` is the path of the CA's `ca-signing.pub` (beside `ca.pem`). A manifest of a
        suite other than standard must carry the CA's suite signature by that key; an existing
        anchor refuses a standard manifest.
        """
        try:
            document = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise IdentityError(f"manifest {path} does not exist: copy the consortium's manifest.json there") from None
        except ValueError:
            raise IdentityError(f"{path} is not a consortium manifest") from None
        return cls.from_document(document, ca_cert, anchor, path)

    @classmethod
    def from_document(
        cls, document: Any, ca_cert: x509.Certificate, anchor: Path | None, where: Path | str
    ) -> Manifest:
        """Verify a parsed manifest document (as `load` reads it from `where`, a path or a sender)."""
        try:
            body, signature = document["manifest"], document["signature"]
            if not isinstance(body, dict):
                raise TypeError
        except (KeyError, TypeError):
            raise IdentityError(f"{where} is not a consortium manifest") from None
        verify_document(ca_cert, body, signature, f"manifest {where}")
        if body.get("schema") != SCHEMA:
            raise IdentityError(f"manifest {where} has schema {body.get('schema')!r}; this fedsilo reads {SCHEMA}")
        _verify_suite_signature(where, document, body.get("suite", DEFAULT_SUITE), anchor)
        try:
            return cls(
                consortium=body["consortium"],
                version=int(body["version"]),
                issued=body.get("issued", ""),
                members=tuple(Member.from_dict(m) for m in body["members"]),
                suite=body.get("suite", DEFAULT_SUITE),
            )
        except (KeyError, TypeError, ValueError):
            raise IdentityError(f"manifest {where} is malformed") from None


def _verify_suite_signature(path: Path | str, document: dict[str, Any], suite: Any, anchor: Path | None) -> None:
    """SignatureError/IdentityError unless the manifest's suite signature matches what `anchor` requires."""
    public = _read_anchor(anchor) if anchor is not None else None
    if suite == DEFAULT_SUITE:
        if public is not None:
            raise SignatureError(
                f"manifest {path} names the standard suite, but the CA's gm trust anchor {anchor} is present: this "
                "consortium uses the gm suite, and a manifest without its SM2 signature is refused (a downgrade)"
            )
        if "suite_signature" in document:
            raise SignatureError(f"manifest {path} names the standard suite but carries a suite_signature")
        return
    if public is None:
        where = f"{anchor} does not exist" if anchor is not None else "no trust anchor was given"
        raise IdentityError(
            f"manifest {path} is a {suite}-suite manifest, signed with the CA's {suite} key, but {where}: copy "
            f"{CA_SIGNING_PUB} from the consortium directory (it is distributed with ca.pem) next to ca.pem"
        )
    if "suite_signature" not in document:
        raise SignatureError(
            f"manifest {path}: a {suite}-suite manifest must carry the CA's {suite} signature (suite_signature) "
            "and this one has none; it was not written by the consortium's CA"
        )
    verify_with_suite(suite, public, document["manifest"], document["suite_signature"], f"manifest {path}")


def _read_anchor(anchor: Path) -> str | None:
    """The hex public key in `anchor`, or None if the file does not exist."""
    try:
        text = anchor.read_text().strip().lower()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IdentityError(f"cannot read the CA's trust anchor {anchor}: {exc.strerror}") from None
    if not text or any(c not in "0123456789abcdef" for c in text):
        raise IdentityError(f"{anchor} is not a {CA_SIGNING_PUB} file (hex of the CA's public signing key)")
    return text


def check_signing_key(name: str, signing_key: str, suite: str) -> None:
    """IdentityError naming member `name` unless `signing_key` (hex) is a public key of crypto suite `suite`."""
    try:
        point = bytes.fromhex(signing_key)
    except (ValueError, TypeError):
        raise IdentityError(f"member {name}: its signing key is not hex text") from None
    try:
        get_suite(suite).check_public_key(point)
    except CryptoSuiteError as exc:
        raise IdentityError(
            f"member {name}: its signing key does not match the consortium's {suite} suite ({exc}); "
            f"admit it with a {suite} key (`fedsilo peer init --suite {suite}`)"
        ) from None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
