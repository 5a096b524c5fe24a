"""Signed, versioned model artefacts: publish at the host, verify wherever they land.

An artefact is a directory `models/JOB/vN/` with the model files, `model_card.json`
and `model_card.sig`. The card lists every file with its size and SHA-256 under
`artifacts`, and names its `signer` (the job's host) and `version`; the signature file
holds the signer's name, certificate and ECDSA signature of the card's canonical JSON.
`verify_artifact` accepts a directory only if the certificate is the consortium CA's
and belongs to the manifest member named as signer, that member is the job's host,
the signature verifies, and every listed file has its stated size and hash (and no
file is missing). A tampered model file or card therefore fails verification.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from cryptography import x509

from peers.errors import IdentityError, SignatureError
from peers.identity.consortium import Identity
from peers.identity.manifest import Manifest
from peers.identity.pki import (
    certificate_fingerprint, certificate_from_pem, certificate_name, certificate_pem, check_issued_by,
)
from peers.identity.signing import sign_document, verify_document
from peers.provenance import sha256_file

CARD, SIGNATURE = "model_card.json", "model_card.sig"


def publish(models_dir: Path, identity: Identity, job_id: str, files: dict[str, Path],
            card: dict[str, Any]) -> tuple[int, Path]:
    """Copy `files` into the next version of JOB's artefact, add hashes, sign the card.

    The directory is written as `.vN.partial` and renamed at the end, so a crash never
    leaves a half-written version behind a valid name; on an error it is removed.
    Returns (version, directory).
    """
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
            if name in (CARD, SIGNATURE) or "/" in name:
                raise IdentityError(f"an artefact file may not be called {name!r}")
            shutil.copyfile(source, partial / name)
            artifacts[name] = {"bytes": (partial / name).stat().st_size, "sha256": sha256_file(partial / name)}
        card = {**card, "job_id": job_id, "version": version, "signer": identity.name, "artifacts": artifacts}
        (partial / CARD).write_text(json.dumps(card, indent=2, allow_nan=False) + "\n")
        signature = {"signer": identity.name, "certificate": certificate_pem(identity.certificate),
                     "signature": sign_document(identity.key, card)}
        (partial / SIGNATURE).write_text(json.dumps(signature, indent=2) + "\n")
        final = job_dir / f"v{version}"
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return version, final


def verify_artifact(directory: Path, manifest: Manifest, ca_cert: x509.Certificate,
                    expected_signer: str | None = None) -> dict[str, Any]:
    """The verified card of the artefact in `directory`; SignatureError/IdentityError naming what failed."""
    try:
        card = json.loads((directory / CARD).read_text())
        signature = json.loads((directory / SIGNATURE).read_text())
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
        raise SignatureError(f"the model is signed by {member.name}, not by the job's host {expected_signer}")
    verify_document(cert, card, signature["signature"], "the model card")
    artifacts = card.get("artifacts")
    if not isinstance(artifacts, dict) or not artifacts:
        raise SignatureError("the model card lists no artefact files")
    for name, facts in artifacts.items():
        path = directory / name
        if not path.is_file():
            raise SignatureError(f"the model lacks {name}, which its card lists")
        if path.stat().st_size != facts["bytes"] or sha256_file(path) != facts["sha256"]:
            raise SignatureError(f"{name} does not match the SHA-256 in the signed card: the file was altered")
    return card
