"""Consortium identity: key files, admission, the signed manifest, signed documents."""

import json
import stat

import pytest

from fedsilo.peers.errors import IdentityError, SignatureError
from fedsilo.peers.identity.consortium import Identity, admit, init_consortium, init_peer
from fedsilo.peers.identity.manifest import Manifest
from fedsilo.peers.identity.pki import load_certificate, load_private_key
from fedsilo.peers.identity.signing import sign_document, verify_document


@pytest.fixture
def consortium(tmp_path):
    init_consortium(tmp_path / "c", "acme")
    return tmp_path


def test_keys_are_private_and_never_overwritten(consortium, tmp_path):
    assert stat.S_IMODE((tmp_path / "c" / "ca.key").stat().st_mode) == 0o600
    init_peer(tmp_path / "p", "bank-a")
    key = tmp_path / "p" / "peer.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    with pytest.raises(IdentityError, match="never overwritten"):
        init_peer(tmp_path / "p", "bank-a")
    assert key.read_bytes() == before
    key.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_private_key(key)


def test_admission_signs_the_request_and_the_manifest(consortium, tmp_path):
    request = init_peer(tmp_path / "p", "bank-a")
    member = admit(tmp_path / "c", request, ("peer",), "https://127.0.0.1:17001", tmp_path / "p" / "peer.pem")
    manifest = Manifest.load(tmp_path / "c" / "manifest.json", load_certificate(tmp_path / "c" / "ca.pem"))
    assert manifest.version == 2 and manifest.member("bank-a") == member
    assert member.fingerprint.startswith("sha256:") and len(member.fingerprint) == 71
    for file in ("ca.pem", "manifest.json"):
        (tmp_path / "p" / file).write_bytes((tmp_path / "c" / file).read_bytes())
    identity = Identity.load(tmp_path / "p")
    assert identity.name == "bank-a"
    with pytest.raises(IdentityError, match="already a member"):
        admit(tmp_path / "c", request, ("peer",), "https://127.0.0.1:17001", tmp_path / "p" / "other.pem")
    with pytest.raises(IdentityError, match="no address"):
        admit(tmp_path / "c", init_peer(tmp_path / "q", "bank-b"), ("peer",), None, tmp_path / "q" / "peer.pem")


def test_a_manifest_edited_by_hand_is_refused(consortium, tmp_path):
    request = init_peer(tmp_path / "p", "owner")
    admit(tmp_path / "c", request, ("model-owner",), None, tmp_path / "p" / "peer.pem")
    path = tmp_path / "c" / "manifest.json"
    document = json.loads(path.read_text())
    document["manifest"]["members"][0]["roles"] = ["model-owner", "peer"]
    document["manifest"]["members"][0]["address"] = "https://127.0.0.1:1"
    path.write_text(json.dumps(document))
    with pytest.raises(SignatureError, match="signature does not verify"):
        Manifest.load(path, load_certificate(tmp_path / "c" / "ca.pem"))


def test_a_certificate_from_another_ca_is_not_an_identity(consortium, tmp_path):
    init_consortium(tmp_path / "other", "other")
    request = init_peer(tmp_path / "p", "bank-a")
    admit(tmp_path / "other", request, ("peer",), "https://127.0.0.1:17001", tmp_path / "p" / "peer.pem")
    for file in ("ca.pem", "manifest.json"):
        (tmp_path / "p" / file).write_bytes((tmp_path / "c" / file).read_bytes())
    with pytest.raises(IdentityError, match="not signed by the consortium CA"):
        Identity.load(tmp_path / "p")


def test_signed_documents_break_on_any_change(consortium, tmp_path):
    key = load_private_key(tmp_path / "c" / "ca.key")
    cert = load_certificate(tmp_path / "c" / "ca.pem")
    document = {"job": "x", "epsilon": 1.0, "peers": ["a", "b"]}
    signature = sign_document(key, document)
    verify_document(cert, document, signature, "doc")
    for altered in ({**document, "epsilon": 1.5}, {**document, "peers": ["b", "a"]}):
        with pytest.raises(SignatureError):
            verify_document(cert, altered, signature, "doc")
