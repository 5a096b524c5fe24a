"""Model pull and replication against a member that serves what it likes (issue 15, item 0).

The attacker is a consortium member with its real certificate and key, running its own
server code (`rogue_peer`: mutual TLS on its manifest address, answering any path): the
job's host when it replicates a model to a participant, or any peer a model owner pulls
from. It knows the job, the card and every message. Its listing names files such as
`../x` or an absolute path; a replica holder signs a card of its own. The puller must
write nothing outside its staging folder, leave nothing half-written, and accept only
a card signed by the host the owner-signed job names.
"""

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from aiohttp import web
from safetensors.numpy import save_file

from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.daemon.model_store import CARD, SIGNATURE, publish
from fedsilo.peers.daemon.store import PeerStore
from fedsilo.peers.errors import SignatureError
from fedsilo.peers.identity.pki import certificate_pem
from fedsilo.peers.identity.signing import sign_document
from fedsilo.peers.identity.tls import server_context
from fedsilo.peers.provenance import sha256_file

from ._consortium import OWNER, make_consortium, member_client, run, running, signed


def bad_names(tmp_path):
    """Every kind of name that must never become a path: (label, name)."""
    return [
        ("parent", "../escaped.txt"),
        ("absolute", str(tmp_path / "absolute-victim.txt")),
        ("empty", ""),
        ("dot", "."),
        ("dotdot", ".."),
        ("nul", "model\x00.txt"),
        ("long", "a" * 300),
        ("nested", "sub/model.txt"),
        ("hidden", ".bashrc"),
    ]


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("pullsafe"), peers=("bank-a", "bank-b"))


@pytest.fixture(scope="module")
def genuine(consortium, tmp_path_factory):
    """A model of job `rep-1` that bank-a (its host) really signed, and the owner-signed job."""
    root = tmp_path_factory.mktemp("genuine")
    save_file({"head.weight": np.arange(8, dtype=np.float32).reshape(1, 8)}, str(root / "model.safetensors"))
    (root / "encoder.json").write_text('{"label": "Y"}')
    envelope = signed(consortium, consortium.job_toml(root / "job.toml", "rep-1", participants=["bank-a", "bank-b"]))
    _, directory = publish(
        root / "models",
        consortium.identity("bank-a"),
        "rep-1",
        {"model.safetensors": root / "model.safetensors", "encoder.json": root / "encoder.json"},
        {"metrics": {"final_auc": 0.71}},
    )
    return envelope, directory


def files_of(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@contextlib.asynccontextmanager
async def rogue_peer(consortium, name, listing, files):
    """`name`'s server as its operator rewrote it: the listing it chooses, and bytes for any path at all
    (`files` by last path segment, b"pwned" otherwise). Yields the paths it was asked for."""
    identity, asked = consortium.identity(name), []

    async def answer(request):
        asked.append(request.path)
        if request.path.count("/") == 3:
            return web.json_response(listing)
        return web.Response(body=files.get(request.path.rsplit("/", 1)[1], b"pwned"))

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        urlsplit(consortium.addresses[name]).port,
        ssl_context=server_context(identity.ca_path, identity.cert_path, identity.key_path),
    )
    await site.start()
    try:
        yield asked
    finally:
        await runner.cleanup()


def every_file(*roots):
    return {p for root in roots for p in Path(root).rglob("*") if p.is_file()}


def listing_with(envelope, names):
    return {"job_id": "rep-1", "version": 1, "host": "bank-a", "files": names, "job": envelope}


def test_model_pull_refuses_every_unsafe_name_in_a_listing(consortium, genuine, tmp_path):
    envelope, directory = genuine
    files = files_of(directory)
    outcomes = {}

    async def body():
        for label, name in bad_names(tmp_path):
            listing = listing_with(envelope, ["encoder.json", "model.safetensors", name])
            async with rogue_peer(consortium, "bank-a", listing, files) as asked:
                async with member_client(consortium, OWNER) as owner:
                    with pytest.raises(SignatureError) as refused:
                        await pull_model(owner, consortium.addresses["bank-a"], "rep-1", tmp_path / "in" / label)
            outcomes[label] = (str(refused.value), list(asked))

    before = every_file(tmp_path)
    run(body())
    assert every_file(tmp_path) == before  # nothing written anywhere, nothing half-written
    assert not (tmp_path / "in").exists() and not (tmp_path / "absolute-victim.txt").exists()
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "in" / "escaped.txt").exists()
    for label, (message, asked) in outcomes.items():
        assert "is not a plain file name" in message and "nothing written" in message, label
        assert asked == ["/v1/models/rep-1"], label  # refused before a single file was fetched


def test_model_pull_fetches_only_what_the_verified_card_lists(consortium, genuine, tmp_path):
    """A plain extra name in the listing is not fetched either; the listing must match the signed card."""
    envelope, directory = genuine
    listing = listing_with(envelope, ["encoder.json", "model.safetensors", "extra.bin"])

    async def body():
        async with rogue_peer(consortium, "bank-a", listing, files_of(directory)) as asked:
            async with member_client(consortium, OWNER) as owner:
                with pytest.raises(SignatureError) as refused:
                    await pull_model(owner, consortium.addresses["bank-a"], "rep-1", tmp_path / "out")
        return refused.value, asked

    refused, asked = run(body())
    assert (
        "lists the files ['encoder.json', 'extra.bin', 'model.safetensors'] but the signed card lists "
        "['encoder.json', 'model.safetensors']" in str(refused)
    )
    assert not any(path.endswith("extra.bin") for path in asked)
    assert list(tmp_path.iterdir()) == []  # no model, no staging folder left


def test_a_card_signed_by_the_host_with_an_unsafe_name_is_refused(consortium, genuine, tmp_path):
    """The host itself is a member too: a card it signed that lists `../x` is refused before any download."""
    envelope, directory = genuine
    host = consortium.identity("bank-a")
    card = json.loads((directory / CARD).read_text())
    card["artifacts"]["../escaped.txt"] = {"bytes": 5, "sha256": "0" * 64}
    signature = {
        "signer": "bank-a",
        "certificate": certificate_pem(host.certificate),
        "signature": sign_document(host.key, card),
    }
    files = {**files_of(directory), CARD: json.dumps(card).encode(), SIGNATURE: json.dumps(signature).encode()}
    listing = listing_with(envelope, ["encoder.json", "model.safetensors"])

    async def body():
        async with rogue_peer(consortium, "bank-a", listing, files) as asked:
            async with member_client(consortium, OWNER) as owner:
                with pytest.raises(SignatureError) as refused:
                    await pull_model(owner, consortium.addresses["bank-a"], "rep-1", tmp_path / "out")
        return refused.value, asked

    before = every_file(tmp_path)
    refused, asked = run(body())
    assert "the signed model card names the file '../escaped.txt', which is not a plain file name" in str(refused)
    assert [p.rsplit("/", 1)[1] for p in asked] == ["rep-1", CARD, SIGNATURE]
    assert every_file(tmp_path) == before and not (tmp_path / "escaped.txt").exists()
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def participation(consortium, peer, envelope):
    """`peer` took part in the job (accepted by its policy, finished): its store holds the signed job."""
    store = PeerStore(consortium.root / peer / "state")
    with store.transaction():
        store.insert_job(
            envelope["job"]["job_id"],
            OWNER,
            envelope["job"]["host"],
            False,
            "credit-card",
            "finished",
            envelope,
            envelope["job"]["nonce"],
        )
    store.close()


def replication_audit(consortium):
    with sqlite3.connect(consortium.root / "bank-b" / "state" / "state.sqlite") as conn:
        return conn.execute(
            "SELECT actor, outcome, detail FROM audit WHERE action = 'model.replicate' ORDER BY seq"
        ).fetchall()


def test_replication_refuses_every_unsafe_name_the_host_lists(consortium, genuine, tmp_path):
    """bank-a, the job's host, announces its model to bank-b and serves a listing with unsafe names."""
    envelope, directory = genuine
    participation(consortium, "bank-b", envelope)
    files = files_of(directory)
    names = bad_names(tmp_path)
    state = consortium.root / "bank-b" / "state"

    async def body():
        async with running(consortium, ["bank-b"]):
            before = every_file(consortium.root, tmp_path)
            for index, (_, name) in enumerate(names):
                listing = listing_with(envelope, ["encoder.json", "model.safetensors", name])
                async with rogue_peer(consortium, "bank-a", listing, files):
                    async with PeerClient(consortium.identity("bank-a")) as host:
                        await host.call("POST", f"{consortium.addresses['bank-b']}/v1/models/rep-1/replicate", {})
                    for _ in range(200):  # the participant fetches in the background
                        if len(replication_audit(consortium)) > index:
                            break
                        await asyncio.sleep(0.05)
            return before, every_file(consortium.root, tmp_path)

    before, after = run(body())
    assert after == before
    assert not (state / "models" / "escaped.txt").exists() and not (tmp_path / "absolute-victim.txt").exists()
    assert not (state / "models" / "rep-1").exists() or not any((state / "models" / "rep-1").iterdir())
    entries = replication_audit(consortium)
    assert len(entries) == len(names)
    for (actor, outcome, detail), (label, _) in zip(entries, names):
        assert (actor, outcome) == ("bank-a", "refused") and "is not a plain file name" in detail, label
    store = PeerStore(state)
    try:
        assert store.model("rep-1") is None
    finally:
        store.close()


def test_a_replica_holder_cannot_sign_the_model_itself(consortium, genuine, tmp_path):
    """bank-b holds a verified replica of bank-a's model, then serves a newer version it signed itself:
    a 16-byte model that claims AUC 0.99. The owner pulling from bank-b gets the genuine one, then a refusal."""
    envelope, directory = genuine
    state = consortium.root / "bank-b" / "state"
    store = PeerStore(state)
    if store.job("rep-1") is None:
        participation(consortium, "bank-b", envelope)
    (tmp_path / "tiny.bin").write_bytes(b"\0" * 16)
    with store.transaction():
        replica = store.models_dir / "rep-1" / "v1"
        replica.mkdir(parents=True, exist_ok=True)
        for name, data in files_of(directory).items():
            (replica / name).write_bytes(data)
        store.add_model("rep-1", 1, replica, "bank-a")
    store.close()
    url = consortium.addresses["bank-b"]

    async def body():
        async with running(consortium, ["bank-b"]):
            async with member_client(consortium, OWNER) as owner:
                genuine_card = await pull_model(owner, url, "rep-1", tmp_path / "genuine")
                store = PeerStore(state)
                version, forged = publish(
                    store.models_dir,
                    consortium.identity("bank-b"),
                    "rep-1",
                    {"model.safetensors": tmp_path / "tiny.bin"},
                    {"job": {"host": "bank-b"}, "metrics": {"final_auc": 0.99}},
                )
                with store.transaction():
                    store.add_model("rep-1", version, forged, "bank-b")
                store.close()
                with pytest.raises(SignatureError) as refused:
                    await pull_model(owner, url, "rep-1", tmp_path / "forged")
        return genuine_card, refused.value

    genuine_card, refused = run(body())
    assert genuine_card["signer"] == "bank-a" and genuine_card["version"] == 1
    assert sha256_file(tmp_path / "genuine" / "model.safetensors") == sha256_file(directory / "model.safetensors")
    assert str(refused).startswith("the model is signed by bank-b but the job's host is bank-a")
    assert not (tmp_path / "forged").exists() and not (tmp_path / ".forged.partial").exists()


def test_a_job_envelope_the_server_altered_is_refused(consortium, genuine, tmp_path):
    """The serving peer rewrites the signed job's host to itself: the owner's signature no longer verifies."""
    envelope, directory = genuine
    altered = {**envelope, "job": {**envelope["job"], "host": "bank-b"}}

    async def body():
        async with rogue_peer(
            consortium,
            "bank-b",
            {**listing_with(altered, ["encoder.json", "model.safetensors"]), "host": "bank-b"},
            files_of(directory),
        ):
            async with member_client(consortium, OWNER) as owner:
                with pytest.raises(SignatureError) as refused:
                    await pull_model(owner, consortium.addresses["bank-b"], "rep-1", tmp_path / "out")
        return refused.value

    refused = run(body())
    assert "the owner-signed job sent with the model does not verify" in str(refused)
    assert not (tmp_path / "out").exists()
