"""Downloading a model artefact from a peer and verifying it (CLI `model pull`, replication)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from peers.daemon.client import PeerClient
from peers.daemon.model_store import CARD, SIGNATURE, verify_artifact
from peers.errors import SignatureError
from privacy.errors import FedsiloError


async def pull_model(client: PeerClient, peer_url: str, job_id: str, out_dir: Path) -> dict[str, Any]:
    """Download JOB's newest model into `out_dir` and verify it; returns the verified card.

    Files land in `out_dir` only after verification (they are fetched into a sibling
    `.partial` directory first); on any failure nothing is left behind.
    """
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FedsiloError(f"{out_dir} is not empty: give a new directory for the model")
    base = f"{peer_url.rstrip('/')}/v1/models/{quote(job_id)}"
    listing = await client.call("GET", base)
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for name in [CARD, SIGNATURE, *listing["files"]]:
            await client.download(f"{base}/files/{quote(name)}", partial / name)
        identity = client.identity
        card = verify_artifact(partial, identity.current_manifest(), identity.ca_certificate,
                               expected_signer=listing["host"])
        if card.get("job_id") != job_id:
            raise SignatureError(f"the card is for job {card.get('job_id')!r}, not {job_id!r}")
        if out_dir.exists():
            out_dir.rmdir()
        partial.rename(out_dir)
        return card
    finally:
        shutil.rmtree(partial, ignore_errors=True)
