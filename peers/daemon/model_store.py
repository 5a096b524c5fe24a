"""Signed, versioned model artefacts: publish at the host, verify wherever they land.

An artefact is a directory `models/JOB/vN/` with the model files, `model_card.json`
and `model_card.sig`. The card lists every file with its size and its hash under
`artifacts`, the hash keyed by its algorithm: ``sha256`` under the standard suite (the
form of every card written before suites existed), ``sm3`` under gm, and names its `signer` (the job's host) and `version`; the signature file
holds the signer's name, certificate and ECDSA signature of the card's canonical JSON.
`verify_artifact` accepts a directory only if the certificate is the consortium CA's
and belongs to the manifest member named as signer, that member is the job's host,
the signature verifies, and every listed file has its stated size and hash (and no
file is missing). A tampered model file or card therefore fails verification. In a gm
consortium the signature file also holds `suite_signature`, the signer's SM2 signature of
the same canonical JSON, checked against the key the manifest binds to the signer; a card
without it is refused there, and so is a card whose files are hashed with another
algorithm than the consortium suite's (named: "hashed with sha256, ... hashes with sm3").

File names come from whoever wrote the card or serves the listing, another member:
`check_file_name` accepts only a plain name (letters, digits, '.', '_', '-', not
starting with '.', at most 100 characters), so a name can never leave the artefact's
directory; `publish` and `verify_card` refuse a card that lists any other.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from cryptography import x509

from fedsilo.peers.errors import IdentityError, SignatureError
from fedsilo.peers.identity.consortium import Identity
from fedsilo.peers.identity.manifest import Manifest
from fedsilo.peers.identity.pki import (
    certificate_fingerprint,
    certificate_from_pem,
    certificate_name,
    certificate_pem,
    check_issued_by,
)
from fedsilo.peers.identity.signing import sign_document, sign_with_suite, verify_document, verify_with_suite
from fedsilo.peers.provenance import file_hash
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE, HASH_LABELS, get_suite

CARD, SIGNATURE = "model_card.json", "model_card.sig"
MAX_FILES = 64
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_file_name(name: Any, where: str) -> str:
    """`name` if it is a plain artefact file name (see the module docstring); SignatureError naming `where`."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
        raise SignatureError(
            f"{where} names the file {str(name)[:120]!r}, which is not a plain file name (letters, "
            "digits, '.', '_', '-', not starting with '.', at most 100 characters): refused, "
            "nothing written"
        )
    return name


def publish(
    models_dir: Path, identity: Identity, job_id: str, files: dict[str, Path], card: dict[str, Any]
) -> tuple[int, Path]:
    """Copy `files` into the next version of JOB's artefact, add hashes, sign the card.

    The directory is written as `.vN.partial` and renamed at the end, so a crash never
    leaves a half-written version behind a valid name; on an error it is removed.
    Returns (version, directory).
    """
    suite = identity.manifest.suite
    label = HASH_LABELS[suite]
    if suite != DEFAULT_SUITE and identity.signing_key is None:
        raise IdentityError(f"{identity.name} holds no {suite} signing key: the consortium must admit it with one")
    job_dir = models_dir / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    versions = [int(p.name[1:]) for p in job_dir.iterdir() if p.name.startswith("v") and p.name[1:].isdigit()]
    version = max(versions, default=0) + 1
    partial = job_dir / f".v{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        artifacts = {}
        for name, source in files.items():
            if name in (CARD, SIGNATURE):
                raise IdentityError(f"an artefact file may not be called {name!r}")
            check_file_name(name, "the model to publish")
            shutil.copyfile(source, partial / name)
            artifacts[name] = {"bytes": (partial / name).stat().st_size, label: file_hash(partial / name, suite)}
        card = {**card, "job_id": job_id, "version": version, "signer": identity.name, "artifacts": artifacts}
        (partial / CARD).write_text(json.dumps(card, indent=2, allow_nan=False) + "\n")
        signature = {
            "signer": identity.name,
            "certificate": certificate_pem(identity.certificate),
            "signature": sign_document(identity.key, card),
        }
        if suite != DEFAULT_SUITE and identity.signing_key is not None:
            signature["suite_signature"] = sign_with_suite(suite, identity.signing_key, card)
        (partial / SIGNATURE).write_text(json.dumps(signature, indent=2) + "\n")
        final = job_dir / f"v{version}"
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return version, final


def verify_artifact(
    directory: Path, manifest: Manifest, ca_cert: x509.Certificate, expected_signer: str | None = None
) -> dict[str, Any]:
    """The verified card of the artefact in `directory`; SignatureError/IdentityError naming what failed."""
    card = verify_card(directory, manifest, ca_cert, expected_signer)
    label = HASH_LABELS[manifest.suite]
    for name, facts in card["artifacts"].items():
        path = directory / name
        if not path.is_file():
            raise SignatureError(f"the model lacks {name}, which its card lists")
        if path.stat().st_size != facts["bytes"] or file_hash(path, manifest.suite) != facts[label]:
            raise SignatureError(
                f"{name} does not match the {get_suite(manifest.suite).hash_algorithm} in the signed card: "
                "the file was altered"
            )
    return card


def verify_card(
    directory: Path, manifest: Manifest, ca_cert: x509.Certificate, expected_signer: str | None = None
) -> dict[str, Any]:
    """The card in `directory` if its signature is `expected_signer`'s (a peer in the manifest, certificate
    from the consortium CA) and its form is sound: a positive integer version, 1..MAX_FILES artefact files
    with plain names, each with its size and its hash under the consortium suite's algorithm (the
    entry's key names it: a card hashed with another algorithm is refused naming both). The files
    themselves are not read."""
    try:
        card = json.loads((directory / CARD).read_text())
        signature = json.loads((directory / SIGNATURE).read_text())
        if not isinstance(card, dict):
            raise TypeError("the card is not an object")
        cert = certificate_from_pem(signature["certificate"])
    except FileNotFoundError as missing:
        raise SignatureError(f"the model lacks {Path(missing.filename).name}") from None
    except (ValueError, KeyError, TypeError):
        raise SignatureError("the model card or its signature file is not valid JSON of the expected form") from None
    check_issued_by(cert, ca_cert)
    member = manifest.by_fingerprint(certificate_fingerprint(cert))
    if member is None or member.name != certificate_name(cert) or member.name != signature.get("signer"):
        raise SignatureError("the model is signed by a certificate that is not in the consortium manifest")
    if not member.has("peer"):
        raise SignatureError(f"the model is signed by {member.name}, who is not a peer of the consortium")
    if card.get("signer") != member.name:
        raise SignatureError(f"the card names signer {card.get('signer')!r} but is signed by {member.name}")
    if expected_signer is not None and member.name != expected_signer:
        raise SignatureError(
            f"the model is signed by {member.name} but the job's host is {expected_signer}: "
            "only the host the owner-signed job names may sign its model"
        )
    verify_document(cert, card, signature["signature"], "the model card")
    if manifest.suite != DEFAULT_SUITE:
        if "suite_signature" not in signature or member.signing_key is None:
            raise SignatureError(
                f"the model card carries no {manifest.suite}-suite signature by {member.name}: this consortium "
                f"uses the {manifest.suite} crypto suite"
            )
        verify_with_suite(manifest.suite, member.signing_key, card, signature["suite_signature"], "the model card")
    version, artifacts = card.get("version"), card.get("artifacts")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SignatureError(f"the model card's version {version!r} is not a positive integer")
    if not isinstance(artifacts, dict) or not 1 <= len(artifacts) <= MAX_FILES:
        raise SignatureError(f"the model card must list 1 to {MAX_FILES} artefact files")
    label = HASH_LABELS[manifest.suite]
    for name, facts in artifacts.items():
        check_file_name(name, "the signed model card")
        if isinstance(facts, dict) and label not in facts:
            other = next((known for known in HASH_LABELS.values() if known in facts), None)
            if other is not None:
                raise SignatureError(
                    f"the model card's entry for {name} is hashed with {other}, but this consortium's "
                    f"{manifest.suite} suite hashes with {label}: refused"
                )
        if (
            name in (CARD, SIGNATURE)
            or not isinstance(facts, dict)
            or isinstance(facts.get("bytes"), bool)
            or not isinstance(facts.get("bytes"), int)
            or facts["bytes"] < 0
            or not isinstance(facts.get(label), str)
        ):
            raise SignatureError(f"the model card's entry for {name} is not {{bytes, {label}}} of an artefact file")
    return card
