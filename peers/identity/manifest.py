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
of the recorded suite, naming the member. The manifest itself is still signed with the
CA's ECDSA P-256 key under both suites (docs/national-crypto.md).
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
from fedsilo.peers.errors import IdentityError
from fedsilo.peers.identity.pki import address_host, check_name
from fedsilo.peers.identity.signing import sign_document, verify_document
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE, SUITES, get_suite

SCHEMA = "fedsilo.manifest/1"
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

    def write(self, path: Path, ca_key: ec.EllipticCurvePrivateKey) -> None:
        """Sign with the CA key and write atomically."""
        body = self.body()
        document = {"manifest": body, "signature": sign_document(ca_key, body)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, ca_cert: x509.Certificate) -> Manifest:
        """Read and verify a manifest; IdentityError if unreadable, SignatureError if not the CA's."""
        try:
            document = json.loads(Path(path).read_text())
            body, signature = document["manifest"], document["signature"]
        except FileNotFoundError:
            raise IdentityError(f"manifest {path} does not exist: copy the consortium's manifest.json there") from None
        except (ValueError, KeyError, TypeError):
            raise IdentityError(f"{path} is not a consortium manifest") from None
        verify_document(ca_cert, body, signature, f"manifest {path}")
        if body.get("schema") != SCHEMA:
            raise IdentityError(f"manifest {path} has schema {body.get('schema')!r}; this fedsilo reads {SCHEMA}")
        return cls(
            consortium=body["consortium"],
            version=int(body["version"]),
            issued=body.get("issued", ""),
            members=tuple(Member.from_dict(m) for m in body["members"]),
            suite=body.get("suite", DEFAULT_SUITE),
        )


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
