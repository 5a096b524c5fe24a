"""A consortium's crypto suite: chosen at init, recorded in the signed manifest, enforced on member keys.

Attackers: a member who hands in a key of the other suite, a holder of the manifest file who
strips or changes the suite, a member directory whose signing key is not the admitted one.
"""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fedsilo.peers.errors import IdentityError, SignatureError
from fedsilo.peers.identity.consortium import Identity, admit, init_consortium, init_peer, load_manifest
from fedsilo.peers.identity.manifest import Manifest
from fedsilo.peers.identity.pki import load_certificate, load_private_key
from fedsilo.peers.identity.signing import canonical_json, sign_document, sign_with_suite, verify_document
from fedsilo.privacy.crypto_suite import get_suite

ADDRESS = "https://127.0.0.1:17001"


def _member(tmp_path: Path, name: str, suite: str | None) -> tuple[Path, Path]:
    request = init_peer(tmp_path / name, name, suite)
    return request, tmp_path / name / "signing.pub"


def _copy_public_files(tmp_path: Path, name: str) -> None:
    for file in ("ca.pem", "ca-signing.pub", "manifest.json"):
        if (tmp_path / "c" / file).exists():
            (tmp_path / name / file).write_bytes((tmp_path / "c" / file).read_bytes())


def _load(tmp_path: Path, path: Path | None = None) -> Manifest:
    """The manifest at `path` (default the consortium's), verified as a member verifies it."""
    return load_manifest(path or tmp_path / "c" / "manifest.json", tmp_path / "c" / "ca.pem")


def _resign(tmp_path: Path, edit) -> Path:
    """Edit the manifest body and sign it again with the real CA keys (a careless or compromised CA)."""
    path = tmp_path / "c" / "manifest.json"
    document = json.loads(path.read_text())
    body = document["manifest"]
    edit(body)
    ca_key = load_private_key(tmp_path / "c" / "ca.key")
    resigned = {"manifest": body, "signature": sign_document(ca_key, body)}
    if "suite_signature" in document:
        resigned["suite_signature"] = sign_with_suite("gm", (tmp_path / "c" / "ca-signing.key").read_bytes(), body)
    path.write_text(json.dumps(resigned))
    return path


def test_gm_consortium_binds_sm2_keys_and_members_load_them(tmp_path: Path) -> None:
    manifest = init_consortium(tmp_path / "c", "bank-broker", "gm")
    assert manifest.suite == "gm"
    request, pub = _member(tmp_path, "bank", "gm")
    assert stat.S_IMODE((tmp_path / "bank" / "signing.key").stat().st_mode) == 0o600
    member = admit(tmp_path / "c", request, ("peer",), ADDRESS, tmp_path / "bank" / "peer.pem", signing_key=pub)
    assert member.signing_key == pub.read_text().strip()
    _copy_public_files(tmp_path, "bank")
    identity = Identity.load(tmp_path / "bank")
    assert identity.manifest.suite == "gm"
    gm = get_suite("gm")
    assert identity.signing_key is not None
    signature = gm.sign(identity.signing_key, b"job")
    gm.verify(bytes.fromhex(identity.manifest.member("bank").signing_key), b"job", signature)


def test_gm_consortium_refuses_a_member_without_or_with_a_standard_key(tmp_path: Path) -> None:
    init_consortium(tmp_path / "c", "bank-broker", "gm")
    request, _ = _member(tmp_path, "plain", None)
    with pytest.raises(IdentityError, match="uses the gm crypto suite: plain must create a gm signing key"):
        admit(tmp_path / "c", request, ("peer",), ADDRESS, tmp_path / "plain" / "peer.pem")
    request, pub = _member(tmp_path, "broker", "standard")
    with pytest.raises(IdentityError, match="member broker: its signing key does not match the consortium's gm"):
        admit(tmp_path / "c", request, ("peer",), ADDRESS, tmp_path / "broker" / "peer.pem", signing_key=pub)
    manifest = _load(tmp_path)
    assert manifest.members == () and manifest.version == 1
    assert not (tmp_path / "broker" / "peer.pem").exists()


def test_standard_consortium_refuses_an_sm2_key(tmp_path: Path) -> None:
    init_consortium(tmp_path / "c", "acme")
    request, pub = _member(tmp_path, "bank", "gm")
    with pytest.raises(IdentityError, match="member bank: its signing key does not match the consortium's standard"):
        admit(tmp_path / "c", request, ("peer",), ADDRESS, tmp_path / "bank" / "peer.pem", signing_key=pub)


def test_the_suite_cannot_be_stripped_or_changed_without_the_ca(tmp_path: Path) -> None:
    init_consortium(tmp_path / "c", "bank-broker", "gm")
    path = tmp_path / "c" / "manifest.json"
    for edit in ("strip", "standard"):
        document = json.loads(path.read_text())
        if edit == "strip":
            del document["manifest"]["suite"]
        else:
            document["manifest"]["suite"] = "standard"
        tampered = tmp_path / f"{edit}.json"
        tampered.write_text(json.dumps(document))
        with pytest.raises(SignatureError, match="signature does not verify"):
            _load(tmp_path, tampered)


def test_a_ca_signed_manifest_with_an_unknown_suite_or_a_mismatched_key_is_refused_by_name(tmp_path: Path) -> None:
    init_consortium(tmp_path / "c", "bank-broker", "gm")
    request, pub = _member(tmp_path, "bank", "gm")
    admit(tmp_path / "c", request, ("peer",), ADDRESS, tmp_path / "bank" / "peer.pem", signing_key=pub)
    p256 = get_suite("standard")
    p256_public = p256.signing_public_key(p256.generate_signing_key()).hex()

    def swap_key(body: dict) -> None:
        body["members"][0]["signing_key"] = p256_public

    with pytest.raises(IdentityError, match="member bank: its signing key does not match the consortium's gm suite"):
        _load(tmp_path, _resign(tmp_path, swap_key))
    with pytest.raises(IdentityError, match="member bank: its signing key is not hex text"):
        _load(tmp_path, _resign(tmp_path, lambda body: body["members"][0].update(signing_key=12)))
    with pytest.raises(IdentityError, match="unknown crypto suite 'sm9'"):
        _load(tmp_path, _resign(tmp_path, lambda body: body.update(suite="sm9")))


def test_a_manifest_from_before_suites_is_standard(tmp_path: Path) -> None:
    init_consortium(tmp_path / "c", "acme")
    path = _resign(tmp_path, lambda body: body.pop("suite"))
    assert _load(tmp_path, path).suite == "standard"


def test_a_member_directory_with_another_or_no_signing_key_is_refused(tmp_path: Path) -> None:
    init_consortium(tmp_path / "c", "bank-broker", "gm")
    request, pub = _member(tmp_path, "bank", "gm")
    admit(tmp_path / "c", request, ("peer",), ADDRESS, tmp_path / "bank" / "peer.pem", signing_key=pub)
    _copy_public_files(tmp_path, "bank")
    key = tmp_path / "bank" / "signing.key"
    key.write_bytes(get_suite("gm").generate_signing_key())
    with pytest.raises(IdentityError, match="is not the gm signing key the manifest binds to bank"):
        Identity.load(tmp_path / "bank")
    key.write_bytes(get_suite("standard").generate_signing_key())
    with pytest.raises(IdentityError, match="of bank is not a gm signing key"):
        Identity.load(tmp_path / "bank")
    key.unlink()
    with pytest.raises(IdentityError, match="binds a gm signing key to bank but .* does not exist"):
        Identity.load(tmp_path / "bank")


def test_cli_records_the_suite_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    def fedsilo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fedsilo.cli", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    done = fedsilo("consortium", "init", "--dir", "c", "--name", "bank-broker", "--suite", "gm")
    assert done.returncode == 0, done.stderr
    assert "(gm crypto suite)" in done.stdout
    assert "c/ca-signing.key (mode 0600) also signs the manifest" in done.stdout
    assert "c/ca-signing.pub is a trust anchor: copy it with ca.pem to every member" in done.stdout
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["manifest"]["suite"] == "gm"
    assert fedsilo("peer", "init", "--name", "bank", "--dir", "bank", "--suite", "gm").returncode == 0
    done = fedsilo("consortium", "admit", "bank/peer.csr", "--dir", "c", "--address", ADDRESS)
    assert done.returncode != 0 and "must create a gm signing key" in done.stderr
    done = fedsilo(
        "consortium", "admit", "bank/peer.csr", "--dir", "c", "--address", ADDRESS, "--signing-key", "bank/signing.pub"
    )
    assert done.returncode == 0, done.stderr
    assert "give every member its new copy; bank also needs ca.pem and c/ca-signing.pub" in done.stdout
    done = fedsilo("consortium", "init", "--dir", "s", "--name", "acme")
    assert done.returncode == 0 and "ca-signing" not in done.stdout
    done = fedsilo("consortium", "init", "--dir", "d", "--name", "x", "--suite", "sm9")
    assert done.returncode == 2 and "invalid choice: 'sm9'" in done.stderr


JOB_TOML = (
    '[job]\nid = "gm-job-1"\nhost = "bank"\nparticipants = ["bank"]\nsource = "credit-card"\nlabel = "Y"\n\n'
    '[model]\nkind = "mlp"\nhidden = [16]\n\n[train]\nrounds = 2\n\n[dp]\nepsilon = 1.0\ndelta = 1e-5\n'
)


def _gm_job_consortium(tmp_path: Path, suite: str = "gm") -> tuple[Identity, Manifest]:
    """A consortium of `suite` with the peer `bank` and the model owner `owner`; the owner's identity."""
    init_consortium(tmp_path / "c", "bank-broker", suite)
    for name, roles, address in (("bank", ("peer",), ADDRESS), ("owner", ("model-owner",), None)):
        request, pub = _member(tmp_path, name, suite)
        admit(tmp_path / "c", request, roles, address, tmp_path / name / "peer.pem", signing_key=pub)
    for name in ("bank", "owner"):
        _copy_public_files(tmp_path, name)
    owner = Identity.load(tmp_path / "owner")
    return owner, owner.manifest


def test_a_gm_job_carries_an_sm2_signature_that_every_peer_checks(tmp_path: Path) -> None:
    from fedsilo.peers.daemon.signed_job import job_document, sign_job, verify_envelope
    from fedsilo.peers.errors import Refused

    owner, manifest = _gm_job_consortium(tmp_path)
    (tmp_path / "job.toml").write_text(JOB_TOML)
    envelope = sign_job(owner, job_document(tmp_path / "job.toml", "owner"))
    assert set(envelope) == {"job", "signature", "certificate", "suite_signature"}
    assert verify_envelope(envelope, manifest, owner.ca_certificate).job_id == "gm-job-1"

    # The ECDSA signature alone (the suite signature dropped) is refused by name.
    stripped = {k: v for k, v in envelope.items() if k != "suite_signature"}
    with pytest.raises(Refused, match="carries no gm-suite signature"):
        verify_envelope(stripped, manifest, owner.ca_certificate)

    # An SM2 signature by another SM2 key (a valid signature, the wrong signer) is refused.
    gm = get_suite("gm")
    from fedsilo.peers.identity.signing import sign_with_suite

    forged = dict(envelope, suite_signature=sign_with_suite("gm", gm.generate_signing_key(), envelope["job"]))
    with pytest.raises(Refused, match="the job: its gm-suite signature does not verify"):
        verify_envelope(forged, manifest, owner.ca_certificate)

    # The document altered after signing (both signatures copied over) is refused.
    altered = dict(envelope, job=dict(envelope["job"], label="Z"))
    with pytest.raises(Refused, match="does not verify"):
        verify_envelope(altered, manifest, owner.ca_certificate)


def test_a_standard_consortium_refuses_an_envelope_with_a_suite_signature(tmp_path: Path) -> None:
    from fedsilo.peers.daemon.signed_job import job_document, sign_job, verify_envelope
    from fedsilo.peers.errors import Refused

    owner, manifest = _gm_job_consortium(tmp_path, "standard")
    (tmp_path / "job.toml").write_text(JOB_TOML)
    envelope = sign_job(owner, job_document(tmp_path / "job.toml", "owner"))
    assert set(envelope) == {"job", "signature", "certificate"}
    verify_envelope(envelope, manifest, owner.ca_certificate)
    with pytest.raises(Refused, match="exactly the keys certificate, job, signature"):
        verify_envelope(dict(envelope, suite_signature="AAAA"), manifest, owner.ca_certificate)


def test_a_gm_model_card_carries_an_sm2_signature_that_pullers_check(tmp_path: Path) -> None:
    from fedsilo.peers.daemon.model_store import SIGNATURE, publish, verify_artifact
    from fedsilo.peers.identity.signing import sign_with_suite

    _gm_job_consortium(tmp_path)
    bank = Identity.load(tmp_path / "bank")
    model = tmp_path / "weights.bin"
    model.write_bytes(b"\x00" * 64)
    _, directory = publish(tmp_path / "models", bank, "gm-job-1", {"weights.bin": model}, {"rounds": 2})
    card = verify_artifact(directory, bank.manifest, bank.ca_certificate, expected_signer="bank")
    assert card["signer"] == "bank"

    path = directory / SIGNATURE
    signature = json.loads(path.read_text())
    original = dict(signature)
    del signature["suite_signature"]
    path.write_text(json.dumps(signature))
    with pytest.raises(SignatureError, match="carries no gm-suite signature by bank"):
        verify_artifact(directory, bank.manifest, bank.ca_certificate, expected_signer="bank")

    signature["suite_signature"] = sign_with_suite("gm", get_suite("gm").generate_signing_key(), card)
    path.write_text(json.dumps(signature))
    with pytest.raises(SignatureError, match="the model card: its gm-suite signature does not verify"):
        verify_artifact(directory, bank.manifest, bank.ca_certificate, expected_signer="bank")

    path.write_text(json.dumps(original))
    verify_artifact(directory, bank.manifest, bank.ca_certificate, expected_signer="bank")


def test_a_newer_manifest_naming_another_suite_is_ignored_by_running_members(tmp_path: Path) -> None:
    """Even signed by the CA, a version that switches gm to standard does not replace the loaded manifest."""
    init_consortium(tmp_path / "c", "bank-broker", "gm")
    request, pub = _member(tmp_path, "bank", "gm")
    admit(tmp_path / "c", request, ("peer",), ADDRESS, tmp_path / "bank" / "peer.pem", signing_key=pub)
    _copy_public_files(tmp_path, "bank")
    identity = Identity.load(tmp_path / "bank")

    def downgrade(body: dict) -> None:
        body.update(suite="standard", version=body["version"] + 1)
        del body["members"][0]["signing_key"]

    downgraded = _resign(tmp_path, downgrade)
    identity.manifest_path.write_bytes(downgraded.read_bytes())
    assert identity.reload_manifest().suite == "gm" and identity.manifest.version == 2


# -- the manifest's SM2 signature (the CA's second trust anchor) ---------------------------------


def _forge(tmp_path: Path, edit, suite_signature: str | None) -> Path:
    """A next manifest version edited by someone holding the CA's ECDSA key only.

    The body is re-signed with ca.key; `suite_signature` is what the forger puts beside it (None: none).
    """
    path = tmp_path / "c" / "manifest.json"
    body = json.loads(path.read_text())["manifest"]
    edit(body)
    body["version"] += 1
    document = {"manifest": body, "signature": sign_document(load_private_key(tmp_path / "c" / "ca.key"), body)}
    if suite_signature is not None:
        document["suite_signature"] = suite_signature
    forged = tmp_path / f"forged-{len(list(tmp_path.glob('forged-*')))}.json"
    forged.write_text(json.dumps(document))
    return forged


def _gm_with_bank(tmp_path: Path) -> Identity:
    init_consortium(tmp_path / "c", "bank-broker", "gm")
    request, pub = _member(tmp_path, "bank", "gm")
    admit(tmp_path / "c", request, ("peer",), ADDRESS, tmp_path / "bank" / "peer.pem", signing_key=pub)
    _copy_public_files(tmp_path, "bank")
    return Identity.load(tmp_path / "bank")


def test_every_gm_manifest_version_carries_the_cas_sm2_signature_under_its_anchor(tmp_path: Path) -> None:
    from fedsilo.peers.identity.consortium import remove

    init_consortium(tmp_path / "c", "bank-broker", "gm")
    key, anchor = tmp_path / "c" / "ca-signing.key", tmp_path / "c" / "ca-signing.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    gm = get_suite("gm")
    assert anchor.read_text() == gm.signing_public_key(key.read_bytes()).hex() + "\n"
    public = bytes.fromhex(anchor.read_text())
    versions = [json.loads((tmp_path / "c" / "manifest.json").read_text())]
    request, pub = _member(tmp_path, "bank", "gm")
    admit(tmp_path / "c", request, ("peer",), ADDRESS, tmp_path / "bank" / "peer.pem", signing_key=pub)
    versions.append(json.loads((tmp_path / "c" / "manifest.json").read_text()))
    remove(tmp_path / "c", "bank")
    versions.append(json.loads((tmp_path / "c" / "manifest.json").read_text()))
    assert [v["manifest"]["version"] for v in versions] == [1, 2, 3]
    for document in versions:
        assert set(document) == {"manifest", "signature", "suite_signature"}
        gm.verify(public, canonical_json(document["manifest"]), base64.b64decode(document["suite_signature"]))
    assert _load(tmp_path).version == 3


def test_a_holder_of_the_cas_ecdsa_key_alone_cannot_make_a_gm_manifest(tmp_path: Path) -> None:
    """Stripped, forged by another SM2 key, copied onto other bytes, or downgraded: refused, ECDSA valid."""
    identity = _gm_with_bank(tmp_path)
    genuine = json.loads((tmp_path / "c" / "manifest.json").read_text())

    def admit_mallory(body: dict) -> None:
        body["members"].append(dict(body["members"][0], name="mallory", fingerprint="sha256:" + "00" * 32))

    def downgrade(body: dict) -> None:
        body["suite"] = "standard"
        del body["members"][0]["signing_key"]

    other_sm2 = sign_with_suite("gm", get_suite("gm").generate_signing_key(), genuine["manifest"])
    attacks = {
        "stripped": (_forge(tmp_path, admit_mallory, None), "must carry the CA's gm signature .* has none"),
        "another SM2 key": (
            _forge(tmp_path, admit_mallory, other_sm2),
            "its gm-suite signature does not verify",
        ),
        "the genuine SM2 signature on other bytes": (
            _forge(tmp_path, admit_mallory, genuine["suite_signature"]),
            "its gm-suite signature does not verify",
        ),
        "downgraded to standard": (_forge(tmp_path, downgrade, None), "names the standard suite, but the CA's gm"),
    }
    ca = load_certificate(tmp_path / "c" / "ca.pem")
    for name, (forged, refusal) in attacks.items():
        document = json.loads(forged.read_text())
        verify_document(ca, document["manifest"], document["signature"], name)  # the ECDSA signature is valid
        with pytest.raises(SignatureError, match=refusal):
            _load(tmp_path, forged)
        # A member loading it at start refuses it; a running member keeps its current version.
        identity.manifest_path.write_bytes(forged.read_bytes())
        with pytest.raises(SignatureError, match=refusal):
            Identity.load(tmp_path / "bank")
        assert identity.reload_manifest().version == 2 and identity.manifest.member("mallory") is None
        # The CA's own commands refuse to build on it.
        (tmp_path / "c" / "manifest.json").write_bytes(forged.read_bytes())
        with pytest.raises(SignatureError, match=refusal):
            from fedsilo.peers.identity.consortium import remove

            remove(tmp_path / "c", "bank")
        (tmp_path / "c" / "manifest.json").write_text(json.dumps(genuine))


def test_a_gm_member_without_the_anchor_is_told_where_to_get_it(tmp_path: Path) -> None:
    _gm_with_bank(tmp_path)
    (tmp_path / "bank" / "ca-signing.pub").unlink()
    with pytest.raises(IdentityError, match="ca-signing.pub does not exist: copy ca-signing.pub from the consortium"):
        Identity.load(tmp_path / "bank")
    (tmp_path / "bank" / "ca-signing.pub").write_text("not hex\n")
    with pytest.raises(IdentityError, match="is not a ca-signing.pub file"):
        Identity.load(tmp_path / "bank")
    # Another SM2 key in its place (an attacker's anchor) verifies nothing the CA signed.
    gm = get_suite("gm")
    (tmp_path / "bank" / "ca-signing.pub").write_text(gm.signing_public_key(gm.generate_signing_key()).hex())
    with pytest.raises(SignatureError, match="its gm-suite signature does not verify"):
        Identity.load(tmp_path / "bank")


def test_a_gm_ca_without_its_sm2_key_writes_no_manifest(tmp_path: Path) -> None:
    _gm_with_bank(tmp_path)
    before = (tmp_path / "c" / "manifest.json").read_bytes()
    (tmp_path / "c" / "ca-signing.key").unlink()
    from fedsilo.peers.identity.consortium import remove

    with pytest.raises(IdentityError, match="ca-signing.key, the CA's gm signing key .* does not exist"):
        remove(tmp_path / "c", "bank")
    assert (tmp_path / "c" / "manifest.json").read_bytes() == before


STANDARD_MANIFEST = """{
  "manifest": {
    "schema": "fedsilo.manifest/1",
    "consortium": "acme",
    "version": 2,
    "issued": "2026-01-02T03:04:05+00:00",
    "suite": "standard",
    "members": [
      {
        "name": "bank",
        "fingerprint": "sha256:ab",
        "roles": [
          "peer"
        ],
        "address": "https://127.0.0.1:17001",
        "node_public_key": null
      }
    ]
  },
  "signature": "SIGNATURE"
}
"""


def test_a_standard_manifest_is_byte_for_byte_what_it_was(tmp_path: Path) -> None:
    """No suite signature, no anchor, the same layout; an anchor planted beside ca.pem is a refusal, not a bypass."""
    from fedsilo.peers.identity.manifest import Member

    init_consortium(tmp_path / "c", "acme")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["ca.key", "ca.pem", "crl.pem", "manifest.json"]
    ca_key = load_private_key(tmp_path / "c" / "ca.key")
    member = Member("bank", "sha256:ab", ("peer",), ADDRESS)
    path = tmp_path / "m.json"
    Manifest("acme", 2, (member,), "2026-01-02T03:04:05+00:00").write(path, ca_key)
    signature = json.loads(path.read_text())["signature"]
    assert path.read_text() == STANDARD_MANIFEST.replace("SIGNATURE", signature)
    ca = load_certificate(tmp_path / "c" / "ca.pem")
    assert Manifest.load(path, ca, tmp_path / "c" / "ca-signing.pub").version == 2
    with pytest.raises(SignatureError, match="names the standard suite but carries a suite_signature"):
        document = json.loads(path.read_text())
        path.write_text(json.dumps(dict(document, suite_signature="AAAA")))
        Manifest.load(path, ca)
