"""A peer's SecAgg+ identity: its consortium key signs, the CA-signed manifest decides who verifies."""

import os

import pytest

from fedsilo.peers.errors import IdentityError
from fedsilo.peers.identity.manifest import Manifest
from fedsilo.peers.identity.pki import load_certificate, load_private_key
from fedsilo.peers.identity.round_keys import (
    CertificateSigner,
    ManifestVerifier,
    load_round_identity,
    simulated_consortium,
    simulated_files,
    simulated_identity,
)


@pytest.fixture(scope="module")
def two_consortia(tmp_path_factory):
    root = tmp_path_factory.mktemp("round-keys")
    return simulated_consortium(root / "ours", 3), simulated_consortium(root / "theirs", 2)


def test_a_member_signs_and_every_member_verifies_by_name(two_consortia):
    ours, _ = two_consortia
    signer, verifier = simulated_identity(ours, 0)
    _, other = simulated_identity(ours, 2)
    signature = signer.sign(b"transcript")
    assert verifier.verify(signer.credential, signature, b"transcript") == "bank-00000"
    assert other.verify(signer.credential, signature, b"transcript") == "bank-00000"
    with pytest.raises(ValueError, match="signature is not 'bank-00000'"):
        other.verify(signer.credential, signature, b"another transcript")


def test_certificates_of_another_ca_or_outside_the_manifest_are_refused(two_consortia):
    ours, theirs = two_consortia
    _, verifier = simulated_identity(ours, 1)
    stranger, _ = simulated_identity(theirs, 0)  # the same name, another consortium's CA
    with pytest.raises(ValueError, match="not signed by the consortium CA"):
        verifier.verify(stranger.credential, stranger.sign(b"t"), b"t")
    with pytest.raises(ValueError, match="not a certificate"):
        verifier.verify(b"bank-00000", b"", b"t")
    # a member removed from the manifest: its CA-signed certificate no longer verifies
    files = simulated_files(ours, 0)
    manifest = Manifest.load(files.manifest, load_certificate(files.ca_cert))
    shrunk = ManifestVerifier(manifest.without_member("bank-00000"), load_certificate(files.ca_cert))
    signer = CertificateSigner(load_private_key(files.key), load_certificate(files.cert))
    with pytest.raises(ValueError, match="'bank-00000' is not a peer in the consortium's manifest"):
        shrunk.verify(signer.credential, signer.sign(b"t"), b"t")


def test_a_peer_whose_files_do_not_belong_together_is_refused(two_consortia, tmp_path):
    ours, theirs = two_consortia
    mine, foreign = simulated_files(ours, 0), simulated_files(theirs, 0)
    with pytest.raises(IdentityError, match="not signed by the consortium CA"):
        load_round_identity(foreign.key, foreign.cert, mine.ca_cert, mine.manifest)
    with pytest.raises(IdentityError, match="does not belong to its key"):
        load_round_identity(simulated_files(ours, 1).key, mine.cert, mine.ca_cert, mine.manifest)
    with pytest.raises(IdentityError, match="does not exist"):
        load_round_identity(tmp_path / "missing.key", mine.cert, mine.ca_cert, mine.manifest)
    assert oct(os.stat(mine.key).st_mode & 0o777) == "0o600"


@pytest.fixture(scope="module")
def gm_consortium(tmp_path_factory):
    return simulated_consortium(tmp_path_factory.mktemp("round-keys-gm") / "gm", 3, suite="gm")


def test_in_a_gm_consortium_round_keys_are_sm2_signed_under_the_manifest_bound_key(gm_consortium):
    from fedsilo.privacy.crypto_suite import get_suite

    signer, verifier = simulated_identity(gm_consortium, 0)
    _, other = simulated_identity(gm_consortium, 2)
    assert verifier.suite == other.suite == "gm"
    signature = signer.sign(b"transcript")
    assert other.verify(signer.credential, signature, b"transcript") == "bank-00000"
    member = verifier.manifest.member("bank-00000")
    get_suite("gm").verify(bytes.fromhex(member.signing_key), b"transcript", signature)  # SM2, that key
    with pytest.raises(ValueError, match="not the gm-suite signature of 'bank-00000'"):
        other.verify(signer.credential, signature, b"another transcript")


def test_in_a_gm_consortium_an_ecdsa_or_another_members_signature_is_refused(gm_consortium):
    """The certificate's ECDSA key, or another member's SM2 key, does not sign for a member of a gm consortium."""
    from fedsilo.privacy.crypto_suite import get_suite

    files = simulated_files(gm_consortium, 0)
    _, verifier = simulated_identity(gm_consortium, 1)
    ecdsa = CertificateSigner(load_private_key(files.key), load_certificate(files.cert))
    with pytest.raises(ValueError, match="not the gm-suite signature of 'bank-00000'"):
        verifier.verify(ecdsa.credential, ecdsa.sign(b"t"), b"t")
    someone_else = simulated_files(gm_consortium, 1).signing_key.read_bytes()
    with pytest.raises(ValueError, match="not the gm-suite signature of 'bank-00000'"):
        verifier.verify(ecdsa.credential, get_suite("gm").sign(someone_else, b"t"), b"t")


def test_a_gm_member_without_its_signing_key_or_with_anothers_is_refused(gm_consortium):
    mine, theirs = simulated_files(gm_consortium, 0), simulated_files(gm_consortium, 1)
    with pytest.raises(IdentityError, match="uses the gm crypto suite: bank-00000 signs .*`signing-key`"):
        load_round_identity(mine.key, mine.cert, mine.ca_cert, mine.manifest)
    with pytest.raises(IdentityError, match="is not the gm signing key the manifest binds to bank-00000"):
        load_round_identity(mine.key, mine.cert, mine.ca_cert, mine.manifest, theirs.signing_key)
    assert mine.node_config()["signing-key"] == str(mine.signing_key)
    assert oct(os.stat(mine.signing_key).st_mode & 0o777) == "0o600"


def test_a_supernode_refuses_a_gm_manifest_without_the_cas_sm2_signature_or_anchor(tmp_path):
    """The attacker strips the CA's SM2 signature from a genuine manifest (its ECDSA signature still valid), or
    the peer lacks the CA's ca-signing.pub: refused before any round key is trusted."""
    import json

    from fedsilo.peers.errors import SignatureError

    directory = simulated_consortium(tmp_path / "gm", 2, suite="gm")
    files = simulated_files(directory, 0)
    load_round_identity(files.key, files.cert, files.ca_cert, files.manifest, files.signing_key)
    assert (directory / "ca-signing.pub").exists() and (directory / "ca-signing.key").stat().st_mode & 0o777 == 0o600
    genuine = files.manifest.read_text()
    stripped = {k: v for k, v in json.loads(genuine).items() if k != "suite_signature"}
    files.manifest.write_text(json.dumps(stripped))
    with pytest.raises(SignatureError, match="must carry the CA's gm signature .* has none"):
        load_round_identity(files.key, files.cert, files.ca_cert, files.manifest, files.signing_key)
    files.manifest.write_text(genuine)
    (directory / "ca-signing.pub").unlink()
    with pytest.raises(IdentityError, match="ca-signing.pub does not exist: copy ca-signing.pub"):
        load_round_identity(files.key, files.cert, files.ca_cert, files.manifest, files.signing_key)
