"""Downloading a model artefact from a peer and verifying it (CLI `model pull`, replication).

Nothing the serving peer says is believed, since any member can run a modified daemon:

* Who must have signed the model is the host named in the owner-signed job: the
  puller's own copy of it when it has one (replication), otherwise the envelope the
  serving peer hands over, whose owner signature is checked against the consortium CA
  and manifest. The serving peer's own claim of who the host is never counts, so a
  replica holder that signs a card of its own is refused.
* File names are untrusted input. The listing's names must be plain file names
  (`check_file_name`) before anything is fetched; then the card and its signature
  are fetched under their fixed names and verified; then only the files the verified
  card lists (plain names too) are fetched, each at most the size the card states,
  into a staging folder next to `out_dir`. The listing must name exactly those files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fedsilo.errors import FedsiloError
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.model_store import CARD, SIGNATURE, check_file_name, verify_artifact, verify_card
from fedsilo.peers.daemon.signed_job import verify_envelope
from fedsilo.peers.errors import SignatureError

MAX_CARD_BYTES = 1 << 20


async def pull_model(
    client: PeerClient, peer_url: str, job_id: str, out_dir: Path, job_envelope: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Download JOB's newest model into `out_dir` and verify it; returns the verified card.

    `job_envelope`: the owner-signed job as the puller holds it (see the module
    docstring); without it, the one the serving peer sends is verified and used.
    Files land in `out_dir` only after verification (they are fetched into a sibling
    `.partial` directory first); on any failure nothing is left behind.
    """
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FedsiloError(f"{out_dir} is not empty: give a new directory for the model")
    base = f"{peer_url.rstrip('/')}/v1/models/{quote(job_id, safe='')}"
    listing = await client.call("GET", base)
    if not isinstance(listing, dict) or not isinstance(listing.get("files"), list):
        raise SignatureError(
            f"{peer_url} answered the model listing with something that is not {{job_id, version, host, files, job}}"
        )
    names = [check_file_name(name, f"the listing of {peer_url}") for name in listing["files"]]
    host = _job_host(client, job_envelope if job_envelope is not None else listing.get("job"), job_id, peer_url)
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        identity = client.identity
        for name in (CARD, SIGNATURE):
            if await client.download(f"{base}/files/{name}", partial / name, limit=MAX_CARD_BYTES) > MAX_CARD_BYTES:
                raise SignatureError(f"{peer_url} sent a {name} larger than {MAX_CARD_BYTES} bytes: refused")
        card = verify_card(partial, identity.current_manifest(), identity.ca_certificate, expected_signer=host)
        if card.get("job_id") != job_id:
            raise SignatureError(f"the card is for job {card.get('job_id')!r}, not {job_id!r}")
        if sorted(names) != sorted(card["artifacts"]):
            raise SignatureError(
                f"{peer_url} lists the files {sorted(names)} but the signed card lists "
                f"{sorted(card['artifacts'])}: refused"
            )
        for name, facts in card["artifacts"].items():
            if await client.download(f"{base}/files/{name}", partial / name, limit=facts["bytes"]) > facts["bytes"]:
                raise SignatureError(
                    f"{name} does not match the size in the signed card: {peer_url} sent more "
                    f"than its {facts['bytes']} bytes"
                )
        card = verify_artifact(partial, identity.current_manifest(), identity.ca_certificate, expected_signer=host)
        if out_dir.exists():
            out_dir.rmdir()
        partial.rename(out_dir)
        return card
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _job_host(client: PeerClient, envelope: Any, job_id: str, peer_url: str) -> str:
    """The host the owner-signed `envelope` of JOB names; SignatureError if it is not such a job."""
    if envelope is None:
        raise SignatureError(
            f"{peer_url} did not send the owner-signed job with the model: the job's host, who "
            "must have signed the model, cannot be checked"
        )
    try:
        job = verify_envelope(
            envelope, client.identity.current_manifest(), client.identity.ca_certificate, check_live=False
        )
    except FedsiloError as error:
        raise SignatureError(f"the owner-signed job sent with the model does not verify: {error}") from None
    if job.job_id != job_id:
        raise SignatureError(f"{peer_url} sent the signed job {job.job_id!r} with the model of {job_id!r}")
    return job.host
