"""Replication that completes (issue 19, item 5): idempotent, resumed after restarts, no staging left behind.

bank-b's real daemon (in process, mutual TLS on 127.0.0.1) took part in job `rep-1`,
hosted by bank-a. bank-a's server is `rogue_peer` from test_model_pull_attacks: it
serves the genuine model bank-a signed (and counts every request). A re-announced model
is fetched once and kept once; a staging folder left by a daemon killed mid-fetch is
removed at start and blocks nothing; a model announced while bank-b was down is fetched
when bank-b starts again, with no announcement.
"""

import asyncio
import json
import shutil
import sqlite3

import pytest

from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.model_store import CARD
from fedsilo.peers.daemon.roles.replication import STAGING
from fedsilo.peers.daemon.store import PeerStore

from ._consortium import make_consortium, run, running
from .test_model_pull_attacks import files_of, listing_with, participation, rogue_peer
from .test_model_pull_attacks import genuine as genuine  # the fixture, shared


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("replication"), peers=("bank-a", "bank-b"))


@pytest.fixture(autouse=True)
def fresh_state(consortium):
    """Each test starts bank-b from an empty state folder."""
    shutil.rmtree(consortium.root / "bank-b" / "state", ignore_errors=True)


def replicas(consortium):
    store = PeerStore(consortium.root / "bank-b" / "state")
    try:
        return store.models()
    finally:
        store.close()


def replication_audit(consortium):
    with sqlite3.connect(consortium.root / "bank-b" / "state" / "state.sqlite") as conn:
        return conn.execute(
            "SELECT actor, outcome, detail FROM audit WHERE action = 'model.replicate' ORDER BY seq"
        ).fetchall()


async def until(predicate, seconds=20.0):
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def test_a_reannounced_model_is_kept_once_and_leaves_no_staging_folder(consortium, genuine):
    envelope, directory = genuine
    participation(consortium, "bank-b", envelope)
    models = consortium.root / "bank-b" / "state" / "models"
    listing = listing_with(envelope, ["encoder.json", "model.safetensors"])

    async def body():
        async with rogue_peer(consortium, "bank-a", listing, files_of(directory)) as asked:
            async with running(consortium, ["bank-b"]):
                await until(lambda: len(replicas(consortium)) == 1)  # resumed at start: no announcement needed
                async with PeerClient(consortium.identity("bank-a")) as host:
                    for _ in range(3):
                        url = f"{consortium.addresses['bank-b']}/v1/models/rep-1/replicate"
                        assert await host.call("POST", url, {}) == {"ok": True}
                    await until(lambda: sum(p.endswith("/rep-1") for p in asked) >= 4)
                    await asyncio.sleep(0.3)
            return list(asked)

    asked = run(body())
    assert [(m["job_id"], m["version"], m["signer"]) for m in replicas(consortium)] == [("rep-1", 1, "bank-a")]
    assert [(a, o) for a, o, _ in replication_audit(consortium)] == [("bank-a", "ok")]
    # the card was downloaded once: each re-announcement read the listing and found the version kept
    assert sum(p.endswith(f"/{CARD}") for p in asked) == 1
    assert sorted(p.name for p in (models / "rep-1").iterdir()) == ["v1"]
    assert not list(models.rglob(f"*{STAGING}*"))


def test_a_staging_folder_left_by_a_killed_daemon_is_removed_and_replication_completes(consortium, genuine):
    envelope, directory = genuine
    participation(consortium, "bank-b", envelope)
    models = consortium.root / "bank-b" / "state" / "models"
    leftover = models / "rep-1" / STAGING
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half a download")
    listing = listing_with(envelope, ["encoder.json", "model.safetensors"])

    async def body():
        async with running(consortium, ["bank-b"]):
            assert not leftover.exists()  # removed at start, before any fetch
            async with rogue_peer(consortium, "bank-a", listing, files_of(directory)):
                async with PeerClient(consortium.identity("bank-a")) as host:
                    await host.call("POST", f"{consortium.addresses['bank-b']}/v1/models/rep-1/replicate", {})
                await until(lambda: len(replicas(consortium)) == 1)

    run(body())
    kept = models / "rep-1" / "v1"
    assert (kept / "model.safetensors").read_bytes() == (directory / "model.safetensors").read_bytes()
    assert not list(models.rglob(f"*{STAGING}*"))


def test_a_participant_down_when_the_model_was_announced_fetches_it_when_it_starts(consortium, genuine):
    envelope, directory = genuine
    participation(consortium, "bank-b", envelope)
    listing = listing_with(envelope, ["encoder.json", "model.safetensors"])

    async def body():
        async with running(consortium, ["bank-b"]):  # the host is down: nothing to fetch yet, nothing kept
            await asyncio.sleep(0.5)
            assert replicas(consortium) == []
        async with rogue_peer(consortium, "bank-a", listing, files_of(directory)):
            # bank-a announces while bank-b is down: the announcement is lost
            with pytest.raises(Exception, match="could not reach|connect"):
                async with PeerClient(consortium.identity("bank-a")) as host:
                    await host.call("POST", f"{consortium.addresses['bank-b']}/v1/models/rep-1/replicate", {})
            async with running(consortium, ["bank-b"]):  # restarted: it fetches on its own
                await until(lambda: len(replicas(consortium)) == 1)

    run(body())
    assert [(a, o, d) for a, o, d in replication_audit(consortium)] == [("bank-a", "ok", "version 1 verified")]


def test_a_resumed_fetch_verifies_like_an_announced_one(consortium, genuine):
    """The host (bank-a) serves, to a participant fetching on its own at start, a card it did not sign
    for this job (bank-b's own signature on it): refused and audited, nothing kept, no staging left."""
    from fedsilo.peers.daemon.model_store import SIGNATURE
    from fedsilo.peers.identity.pki import certificate_pem
    from fedsilo.peers.identity.signing import sign_document

    envelope, directory = genuine
    participation(consortium, "bank-b", envelope)
    forger = consortium.identity("bank-b")
    card = json.loads((directory / CARD).read_text())
    forged = {
        "signer": "bank-b",
        "certificate": certificate_pem(forger.certificate),
        "signature": sign_document(forger.key, card),
    }
    files = {**files_of(directory), SIGNATURE: json.dumps(forged).encode()}
    listing = listing_with(envelope, ["encoder.json", "model.safetensors"])

    async def body():
        async with rogue_peer(consortium, "bank-a", listing, files):
            async with running(consortium, ["bank-b"]):
                await until(lambda: len(replication_audit(consortium)) == 1)

    run(body())
    assert replicas(consortium) == []
    [(actor, outcome, detail)] = replication_audit(consortium)
    assert actor == "bank-a" and outcome != "ok" and "did not verify" in detail
    models = consortium.root / "bank-b" / "state" / "models"
    assert [p for p in models.rglob("*") if p.is_file()] == []  # nothing kept, nothing half-written
