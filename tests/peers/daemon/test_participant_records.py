"""The host's participant records are typed, and the state the untyped daemon wrote still loads, byte for byte."""

import json
import sqlite3

import pytest

from fedsilo.errors import DataError
from fedsilo.peers.daemon.participants import Acceptance, Participant, Report
from fedsilo.peers.daemon.store import PeerStore
from fedsilo.privacy.accounting import Mechanism

# The `reply` JSON of an accepted participant that reported, exactly as the daemon stored it
# when participants were dict[str, Any]: `{**acceptance_reply, "report": report}`.
OLD_REPLY = (
    '{"decision": "accepted", "peer": "bank-b", "rows": 1000, "n_train": 800, "fingerprint": "ab12", '
    '"planned": [{"noise_multiplier": 1.1, "sample_rate": 0.02, "steps": 150}], "delta": 1e-05, '
    '"accountant": "prv", "node_public_key": "-----BEGIN PUBLIC KEY-----\\nMFkw\\n-----END PUBLIC KEY-----\\n", '
    '"report": {"spent": [{"noise_multiplier": 1.1, "sample_rate": 0.02, "steps": 100}], "epsilon": 0.71, '
    '"delta": 1e-05, "accountant": "prv", "failed": null}}'
)


def _old_state(tmp_path):
    """A state directory with the rows the untyped daemon wrote for one job's three participants."""
    store = PeerStore(tmp_path)
    store.insert_job("j1", "risk-dept", "bank-a", True, None, "training", {"job": {}}, "nonce-1")
    store.close()
    conn = sqlite3.connect(tmp_path / "state.sqlite")
    conn.executemany(
        "INSERT INTO participants (job_id, peer, decision, reason, reply) VALUES (?, ?, ?, ?, ?)",
        [
            ("j1", "bank-b", "accepted", "", OLD_REPLY),
            ("j1", "bank-c", "declined", "budget: projected ε = 4.1 exceeds 3", None),
            ("j1", "bank-d", "pending", "", None),
        ],
    )
    conn.commit()
    conn.close()


def test_records_the_untyped_daemon_stored_load_into_the_dataclasses(tmp_path):
    _old_state(tmp_path)
    store = PeerStore(tmp_path)
    accepted, declined, pending = store.participants("j1")
    assert accepted == Participant(
        "bank-b",
        "accepted",
        "",
        Acceptance(
            peer="bank-b",
            rows=1000,
            n_train=800,
            fingerprint="ab12",
            planned=(Mechanism(1.1, 0.02, 150),),
            delta=1e-5,
            accountant="prv",
            node_public_key="-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n",
        ),
        Report((Mechanism(1.1, 0.02, 100),), 0.71, 1e-5, "prv", None),
    )
    assert declined == Participant("bank-c", "declined", "budget: projected ε = 4.1 exceeds 3")
    assert pending == Participant("bank-d", "pending")
    # written back, the row is the same JSON the old daemon wrote (an old daemon could read it)
    with store.transaction():
        store.set_participant("j1", accepted)
    (stored,) = store.conn.execute("SELECT reply FROM participants WHERE peer = 'bank-b'").fetchone()
    assert stored == OLD_REPLY
    assert accepted.to_json() == {
        "peer": "bank-b",
        "decision": "accepted",
        "reason": "",
        "reply": json.loads(OLD_REPLY),
    }
    store.close()


def test_an_acceptance_with_a_missing_or_mistyped_field_is_refused_by_name():
    reply = json.loads(OLD_REPLY)
    for key, bad in (("node_public_key", None), ("rows", "1000"), ("rows", True), ("planned", [{"steps": 1}])):
        with pytest.raises(DataError, match=repr(key)):
            Acceptance.from_json({**reply, key: bad})
    with pytest.raises(DataError, match="decision"):
        Participant.from_json({"peer": "bank-b", "decision": "maybe", "reason": "", "reply": None})
