"""Signed model artefacts: publish, pull over mutual TLS, verification, who may pull."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from fedsilo.errors import FedsiloError
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.daemon.model_store import publish, verify_artifact
from fedsilo.peers.daemon.store import PeerStore
from fedsilo.peers.errors import PeerUnreachable, SignatureError

from ._consortium import OWNER, make_consortium, member_client, run, running, signed


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return make_consortium(root, peers=("bank-a", "bank-b"), extra_members=(("outsider", "peer"),))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("files")
    save_file({"head.weight": np.arange(8, dtype=np.float32).reshape(1, 8)}, str(directory / "model.safetensors"))
    (directory / "encoder.json").write_text('{"label": "Y"}')
    return {"model.safetensors": directory / "model.safetensors", "encoder.json": directory / "encoder.json"}


def hosted_job(consortium, tmp_path, job_id):
    """A finished job of bank-a's store (owner risk-dept, participants bank-a and bank-b)."""
    envelope = signed(consortium, consortium.job_toml(tmp_path / f"{job_id}.toml", job_id))
    store = PeerStore(consortium.root / "bank-a" / "state")
    with store.transaction():
        store.insert_job(job_id, OWNER, "bank-a", True, "credit-card", "finished", envelope, envelope["job"]["nonce"])
    store.close()


def test_publish_then_verify_and_tampering_fails(consortium, tmp_path, model_files):
    identity = consortium.identity("bank-a")
    version, directory = publish(tmp_path / "models", identity, "job-x", model_files, {"metrics": {"auc": 0.7}})
    assert version == 1 and directory.name == "v1"
    card = verify_artifact(directory, identity.manifest, identity.ca_certificate, expected_signer="bank-a")
    assert card["artifacts"]["model.safetensors"]["bytes"] == model_files["model.safetensors"].stat().st_size
    with pytest.raises(SignatureError, match="signed by bank-a but the job's host is bank-b"):
        verify_artifact(directory, identity.manifest, identity.ca_certificate, expected_signer="bank-b")

    model = directory / "model.safetensors"
    original = model.read_bytes()
    model.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(SignatureError, match="model.safetensors does not match the SHA-256"):
        verify_artifact(directory, identity.manifest, identity.ca_certificate)
    model.write_bytes(original)

    card_path = directory / "model_card.json"
    text = card_path.read_text()
    card_path.write_text(text.replace('"auc": 0.7', '"auc": 0.9'))
    with pytest.raises(SignatureError, match="model card: the signature does not verify"):
        verify_artifact(directory, identity.manifest, identity.ca_certificate)
    card_path.write_text(text)
    assert verify_artifact(directory, identity.manifest, identity.ca_certificate)["version"] == 1


def test_owner_pulls_and_verifies_outsiders_are_refused(consortium, tmp_path, model_files):
    hosted_job(consortium, tmp_path, "pull-1")
    url = consortium.addresses["bank-a"]

    async def body():
        async with running(consortium, ["bank-a"]) as services:
            published = await services["bank-a"].hosting.publish_model("pull-1", model_files, {"metrics": {}})
            async with member_client(consortium, OWNER) as owner:
                card = await pull_model(owner, url, "pull-1", tmp_path / "pulled")
                listing = await owner.call("GET", f"{url}/v1/models")
            async with member_client(consortium, "outsider") as outsider:
                with pytest.raises(PeerUnreachable, match="403.*outsider may not pull"):
                    await pull_model(outsider, url, "pull-1", tmp_path / "stolen")
            # a file altered on the host's disk is caught by the puller
            stored = consortium.root / "bank-a" / "state" / "models" / "pull-1" / "v1" / "encoder.json"
            stored.write_text('{"label": "other"}')
            async with member_client(consortium, OWNER) as owner:
                with pytest.raises(SignatureError, match="encoder.json does not match"):
                    await pull_model(owner, url, "pull-1", tmp_path / "tampered")
            return published, card, listing

    published, card, listing = run(body())
    assert published == {"job_id": "pull-1", "version": 1}
    assert card["signer"] == "bank-a" and card["job_id"] == "pull-1"
    assert sorted(p.name for p in (tmp_path / "pulled").iterdir()) == [
        "encoder.json",
        "model.safetensors",
        "model_card.json",
        "model_card.sig",
    ]
    assert [m["job_id"] for m in listing["models"]] == ["pull-1"]
    assert not (tmp_path / "stolen").exists() and not (tmp_path / "tampered").exists()
    audit = json.dumps(
        [e for e in PeerStore(consortium.root / "bank-a" / "state").audit.entries() if e.outcome == "refused"],
        default=str,
    )
    assert "outsider may not pull" in audit


def test_pull_refuses_a_non_empty_destination(consortium, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")

    async def body():
        async with member_client(consortium, OWNER) as owner:
            await pull_model(owner, consortium.addresses["bank-a"], "pull-1", tmp_path / "out")

    with pytest.raises(FedsiloError, match="not empty"):
        run(body())
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
