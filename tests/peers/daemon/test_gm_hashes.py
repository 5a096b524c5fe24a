"""The gm suite hashes with SM3: the audit chain, model-card artefact hashes, the job document hash and
data fingerprints; the standard suite keeps SHA-256 byte for byte (a log written before suites still
verifies). Digests are recomputed here independently with `cryptography`'s SM3 / hashlib's SHA-256.

The attacker: whoever can write the peer's SQLite file or a model directory (or the host re-signing a
card), who edits an entry, rewrites one with another algorithm's valid hash, or re-keys a card's hashes
to SHA-256; each is named and refused."""

import hashlib
import json
import sqlite3

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from safetensors.numpy import save_file

from fedsilo.peers.daemon.audit_log import GENESIS, AuditLog
from fedsilo.peers.daemon.card import build_card
from fedsilo.peers.daemon.model_store import publish, verify_artifact
from fedsilo.peers.daemon.policy import file_fingerprint
from fedsilo.peers.daemon.signed_job import verify_envelope
from fedsilo.peers.errors import IntegrityError, PeerUnreachable, SignatureError
from fedsilo.peers.identity.signing import sign_document, sign_with_suite
from fedsilo.privacy.crypto_suite import HASH_LABELS, get_suite

from ._consortium import OWNER, make_consortium, member_client, run, running, signed
from .test_daemon_refusals import propose

FIELDS = ("seq", "time", "actor", "action", "job", "source", "outcome", "detail", "prev_hash")


def sm3(data: bytes) -> str:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize().hex()


def body_bytes(row: dict) -> bytes:
    """An entry's hashed bytes, written out here rather than taken from audit_log."""
    body = {k: row[k] for k in FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rows(db) -> list[dict]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [dict(zip((*FIELDS, "hash"), r)) for r in conn.execute(f"SELECT {', '.join(FIELDS)}, hash FROM audit")]


@pytest.fixture(scope="module")
def gm(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("gmhash"), peers=("bank-a", "bank-b"), suite="gm")


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("sthash"), peers=("bank-a", "bank-b"))


def _daemon_activity(consortium, tmp_path, job_id):
    """bank-b accepts a job and refuses a stranger's read: several audited steps."""
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", job_id))

    async def body():
        async with running(consortium, ["bank-b"]):
            assert (await propose(consortium, envelope))["decision"] == "accepted"
            async with member_client(consortium, OWNER) as owner:
                with pytest.raises(PeerUnreachable, match="404"):
                    await owner.call("GET", f"{consortium.addresses['bank-b']}/v1/models/none")

    run(body())
    return consortium.root / "bank-b" / "state" / "state.sqlite"


def test_a_gm_daemons_audit_chain_is_sm3_and_tampering_is_named(gm, tmp_path):
    db = _daemon_activity(gm, tmp_path, "gm-audit-1")
    entries = rows(db)
    assert len(entries) >= 3
    prev = GENESIS
    for row in entries:
        assert row["prev_hash"] == prev
        assert row["hash"] == "sm3:" + sm3(body_bytes(row))
        prev = row["hash"]

    with sqlite3.connect(db) as conn:
        assert AuditLog(conn, "gm").verify().ok
        conn.execute("UPDATE audit SET detail = 'nothing happened' WHERE seq = 2")
        check = AuditLog(conn, "gm").verify()
        assert (check.first_broken, check.reason) == (2, "its content does not match its hash (it was altered)")
        # rewritten with a valid SHA-256 of its edited content: named as the wrong algorithm
        edited = {**entries[1], "detail": "nothing happened"}
        conn.execute("UPDATE audit SET hash = ? WHERE seq = 2", (hashlib.sha256(body_bytes(edited)).hexdigest(),))
        check = AuditLog(conn).verify()
        assert (
            check.first_broken == 2 and "its hash is sha256, not the sm3 of this chain (the gm suite)" in check.reason
        )


def test_a_standard_daemons_audit_chain_is_unchanged_sha256(standard, tmp_path):
    db = _daemon_activity(standard, tmp_path, "std-audit-1")
    prev = GENESIS
    for row in rows(db):
        assert row["prev_hash"] == prev
        assert row["hash"] == hashlib.sha256(body_bytes(row)).hexdigest()
        prev = row["hash"]


def _legacy_log(path):
    """A log as the code before suites wrote it: bare SHA-256 hex of the canonical JSON."""
    conn = sqlite3.connect(path)
    AuditLog(conn)  # the table
    prev = GENESIS
    for seq in (1, 2, 3):
        row = dict(zip(FIELDS, (seq, "2026-01-01T00:00:00.000+00:00", "local", "start", None, None, "ok", "", prev)))
        row["hash"] = hashlib.sha256(body_bytes(row)).hexdigest()
        conn.execute(f"INSERT INTO audit VALUES ({', '.join('?' * 10)})", tuple(row.values()))
        prev = row["hash"]
    conn.commit()
    return conn


def test_a_log_written_before_suites_still_verifies_and_a_gm_daemon_refuses_it_by_name(tmp_path):
    conn = _legacy_log(tmp_path / "old.sqlite")
    assert AuditLog(conn).verify().ok and AuditLog(conn, "standard").verify().ok
    log = AuditLog(conn, "standard")
    log.append("local", "stop", "ok")
    assert len(log.entries()[-1].hash) == 64 and log.verify().ok
    with pytest.raises(IntegrityError, match="hash-chained with sha256 but the consortium's gm suite hashes with sm3"):
        AuditLog(conn, "gm")


@pytest.fixture
def model_files(tmp_path):
    save_file({"head.weight": np.arange(8, dtype=np.float32).reshape(1, 8)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "encoder.json").write_text('{"label": "Y"}')
    return {"model.safetensors": tmp_path / "model.safetensors", "encoder.json": tmp_path / "encoder.json"}


def test_a_gm_card_names_sm3_and_a_sha256_card_is_refused_by_name(gm, tmp_path, model_files):
    identity = gm.identity("bank-a")
    _, directory = publish(tmp_path / "models", identity, "job-sm3", model_files, {"metrics": {}})
    card = json.loads((directory / "model_card.json").read_text())
    for name, source in model_files.items():
        assert card["artifacts"][name] == {"bytes": source.stat().st_size, "sm3": sm3(source.read_bytes())}
    assert verify_artifact(directory, identity.manifest, identity.ca_certificate)["version"] == 1

    model = directory / "model.safetensors"
    original = model.read_bytes()
    model.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(SignatureError, match="model.safetensors does not match the SM3 in the signed card"):
        verify_artifact(directory, identity.manifest, identity.ca_certificate)
    model.write_bytes(original)

    # the host itself re-keys the hashes to SHA-256 and signs the card with both of its keys
    for name, source in model_files.items():
        card["artifacts"][name] = {
            "bytes": source.stat().st_size,
            "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        }
    signature = json.loads((directory / "model_card.sig").read_text())
    signature["signature"] = sign_document(identity.key, card)
    signature["suite_signature"] = sign_with_suite("gm", identity.signing_key, card)
    (directory / "model_card.json").write_text(json.dumps(card))
    (directory / "model_card.sig").write_text(json.dumps(signature))
    with pytest.raises(SignatureError, match="hashed with sha256, but this consortium's gm suite hashes with sm3"):
        verify_artifact(directory, identity.manifest, identity.ca_certificate)


def test_a_standard_card_keeps_sha256(standard, tmp_path, model_files):
    identity = standard.identity("bank-a")
    _, directory = publish(tmp_path / "models", identity, "job-sha", model_files, {"metrics": {}})
    card = verify_artifact(directory, identity.manifest, identity.ca_certificate)
    for name, source in model_files.items():
        expected = {"bytes": source.stat().st_size, "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
        assert card["artifacts"][name] == expected


def test_job_document_hash_and_data_fingerprint_follow_the_suite(gm, tmp_path):
    data = gm.root / "bank-a" / "data.csv"
    assert file_fingerprint(data, "gm") == "sm3:" + sm3(data.read_bytes())
    assert file_fingerprint(data) == "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
    identity = gm.identity("bank-a")
    envelope = signed(gm, gm.job_toml(tmp_path / "job.toml", "gm-card-1"))
    job = verify_envelope(envelope, identity.manifest, identity.ca_certificate, check_live=False)
    document = json.dumps(job.document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    gm_card = build_card(job, [], {}, {"rounds": []}, "gm")
    assert gm_card["job"]["document_sm3"] == sm3(document) and "document_sha256" not in gm_card["job"]
    assert build_card(job, [], {}, {"rounds": []})["job"]["document_sha256"] == hashlib.sha256(document).hexdigest()


def test_hash_labels_match_the_suites():
    assert {name: get_suite(name).hash_label for name in HASH_LABELS} == HASH_LABELS
