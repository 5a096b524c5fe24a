"""A consortium's crypto suite: chosen at init, recorded in the signed manifest, enforced on member keys.

Attackers: a member who hands in a key of the other suite, a holder of the manifest file who
strips or changes the suite, a member directory whose signing key is not the admitted one.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fedsilo.peers.errors import IdentityError, SignatureError
from fedsilo.peers.identity.consortium import Identity, admit, init_consortium, init_peer
from fedsilo.peers.identity.manifest import Manifest
from fedsilo.peers.identity.pki import load_certificate, load_private_key
from fedsilo.peers.identity.signing import sign_document
from fedsilo.privacy.crypto_suite import get_suite

ADDRESS = "https://127.0.0.1:17001"


def _member(tmp_path: Path, name: str, suite: str | None) -> tuple[Path, Path]:
    request = init_peer(tmp_path / name, name, suite)
    return request, tmp_path / name / "signing.pub"


def _copy_public_files(tmp_path: Path, name: str) -> None:
    for file in ("ca.pem", "manifest.json"):
        (tmp_path / name / file).write_bytes((tmp_path / "c" / file).read_bytes())


def _resign(tmp_path: Path, edit) -> Path:
    """Edit the manifest body and sign it again with the real CA key (a careless or compromised CA)."""
    path = tmp_path / "c" / "manifest.json"
    body = json.loads(path.read_text())["manifest"]
    edit(body)
    ca_key = load_private_key(tmp_path / "c" / "ca.key")
    path.write_text(json.dumps({"manifest": body, "signature": sign_document(ca_key, body)}))
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
    manifest = Manifest.load(tmp_path / "c" / "manifest.json", load_certificate(tmp_path / "c" / "ca.pem"))
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
            Manifest.load(tampered, load_certificate(tmp_path / "c" / "ca.pem"))


def test_a_ca_signed_manifest_with_an_unknown_suite_or_a_mismatched_key_is_refused_by_name(tmp_path: Path) -> None:
    init_consortium(tmp_path / "c", "bank-broker", "gm")
    request, pub = _member(tmp_path, "bank", "gm")
    admit(tmp_path / "c", request, ("peer",), ADDRESS, tmp_path / "bank" / "peer.pem", signing_key=pub)
    ca = load_certificate(tmp_path / "c" / "ca.pem")
    p256 = get_suite("standard")
    p256_public = p256.signing_public_key(p256.generate_signing_key()).hex()

    def swap_key(body: dict) -> None:
        body["members"][0]["signing_key"] = p256_public

    with pytest.raises(IdentityError, match="member bank: its signing key does not match the consortium's gm suite"):
        Manifest.load(_resign(tmp_path, swap_key), ca)
    with pytest.raises(IdentityError, match="member bank: its signing key is not hex text"):
        Manifest.load(_resign(tmp_path, lambda body: body["members"][0].update(signing_key=12)), ca)
    with pytest.raises(IdentityError, match="unknown crypto suite 'sm9'"):
        Manifest.load(_resign(tmp_path, lambda body: body.update(suite="sm9")), ca)


def test_a_manifest_from_before_suites_is_standard(tmp_path: Path) -> None:
    init_consortium(tmp_path / "c", "acme")
    path = _resign(tmp_path, lambda body: body.pop("suite"))
    assert Manifest.load(path, load_certificate(tmp_path / "c" / "ca.pem")).suite == "standard"


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
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["manifest"]["suite"] == "gm"
    assert fedsilo("peer", "init", "--name", "bank", "--dir", "bank", "--suite", "gm").returncode == 0
    done = fedsilo("consortium", "admit", "bank/peer.csr", "--dir", "c", "--address", ADDRESS)
    assert done.returncode != 0 and "must create a gm signing key" in done.stderr
    done = fedsilo(
        "consortium", "admit", "bank/peer.csr", "--dir", "c", "--address", ADDRESS, "--signing-key", "bank/signing.pub"
    )
    assert done.returncode == 0, done.stderr
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
