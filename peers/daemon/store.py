"""The peer's durable state: one SQLite file (WAL) plus the model store's directories.

Tables: `jobs` (every job this peer hosts or takes part in, with the owner-signed job
document), `participants` (the host's view of who accepted: `participants.Participant`), `nonces` (job nonces
seen, against replays), `models` (published artefacts) and `audit` (see
`audit_log`). The privacy ledger is privacy/ledger's SQLiteLedger in its own file
(`ledger.sqlite`) next to it.

Every state change happens in `transaction()`, together with the audit entry that
records it; a failure inside rolls both back. Only the daemon's actor writes.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsilo.peers.daemon.audit_log import AuditLog
from fedsilo.peers.daemon.participants import Participant

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id     TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    host       TEXT NOT NULL,
    hosting    INTEGER NOT NULL,       -- 1 if this peer hosts the job
    source     TEXT,                   -- this peer's data source, if it takes part
    state      TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    envelope   TEXT NOT NULL,          -- the owner-signed job, as received
    spent      TEXT,                   -- JSON list of mechanisms committed to the ledger
    created    TEXT NOT NULL,
    updated    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
    job_id          TEXT NOT NULL REFERENCES jobs(job_id),
    peer            TEXT NOT NULL,
    decision        TEXT NOT NULL,     -- pending, accepted, declined, unreachable
    reason          TEXT NOT NULL DEFAULT '',
    reply           TEXT,              -- JSON: node key, data summary, fingerprint
    PRIMARY KEY (job_id, peer)
);
CREATE TABLE IF NOT EXISTS nonces (
    nonce   TEXT PRIMARY KEY,
    job_id  TEXT NOT NULL,
    seen    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    job_id   TEXT NOT NULL,
    version  INTEGER NOT NULL,
    dir      TEXT NOT NULL,
    signer   TEXT NOT NULL,
    created  TEXT NOT NULL,
    PRIMARY KEY (job_id, version)
);
"""

ACTIVE_STATES = ("proposing", "accepted", "ready", "training")
FINAL_STATES = ("finished", "failed", "cancelled", "interrupted", "expired")


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobRow:
    job_id: str
    owner: str
    host: str
    hosting: bool
    source: str | None
    state: str
    detail: str
    envelope: dict[str, Any]
    spent: list[dict[str, Any]] | None
    created: str
    updated: str

    def summary(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "owner": self.owner,
            "host": self.host,
            "hosting": self.hosting,
            "source": self.source,
            "state": self.state,
            "detail": self.detail,
            "spent": self.spent,
            "created": self.created,
            "updated": self.updated,
        }


class PeerStore:
    """The SQLite state of one peer (see the module docstring)."""

    def __init__(self, state_dir: Path, suite: str | None = None) -> None:
        """`suite`: the consortium's crypto suite, which hashes the audit chain (see `AuditLog`)."""
        self.state_dir = state_dir
        self.models_dir = state_dir / "models"
        self.jobs_dir = state_dir / "jobs"
        for directory in (state_dir, self.models_dir, self.jobs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        state_dir.chmod(0o700)
        self.path = state_dir / "state.sqlite"
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.executescript(SCHEMA)
        self.audit = AuditLog(self.conn, suite)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # jobs -------------------------------------------------------------------------
    def insert_job(
        self,
        job_id: str,
        owner: str,
        host: str,
        hosting: bool,
        source: str | None,
        state: str,
        envelope: dict[str, Any],
        nonce: str,
    ) -> None:
        stamp = now()
        self.conn.execute(
            "INSERT INTO jobs (job_id, owner, host, hosting, source, state, envelope, created, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, owner, host, int(hosting), source, state, json.dumps(envelope), stamp, stamp),
        )
        self.conn.execute("INSERT INTO nonces (nonce, job_id, seen) VALUES (?, ?, ?)", (nonce, job_id, stamp))

    def set_state(
        self,
        job_id: str,
        state: str,
        detail: str = "",
        spent: list[dict[str, Any]] | None = None,
        source: str | None = None,
    ) -> None:
        self.conn.execute(
            "UPDATE jobs SET state = ?, detail = ?, updated = ?, spent = COALESCE(?, spent), "
            "source = COALESCE(?, source) WHERE job_id = ?",
            (state, detail, now(), json.dumps(spent) if spent is not None else None, source, job_id),
        )

    def job(self, job_id: str) -> JobRow | None:
        row = self.conn.execute(
            "SELECT job_id, owner, host, hosting, source, state, detail, envelope, spent, "
            "created, updated FROM jobs WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        return _job_row(row) if row else None

    def jobs(self, states: tuple[str, ...] | None = None) -> list[JobRow]:
        rows = self.conn.execute(
            "SELECT job_id, owner, host, hosting, source, state, detail, envelope, spent, "
            "created, updated FROM jobs ORDER BY created, job_id"
        ).fetchall()
        found = [_job_row(r) for r in rows]
        return [j for j in found if states is None or j.state in states]

    def nonce_seen(self, nonce: str) -> bool:
        return self.conn.execute("SELECT 1 FROM nonces WHERE nonce = ?", (nonce,)).fetchone() is not None

    # the host's view of participants ------------------------------------------------
    def set_participant(self, job_id: str, participant: Participant) -> None:
        reply = participant.reply_json()
        self.conn.execute(
            "INSERT INTO participants (job_id, peer, decision, reason, reply) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id, peer) DO UPDATE SET decision = excluded.decision, "
            "reason = excluded.reason, reply = excluded.reply",
            (
                job_id,
                participant.peer,
                participant.decision,
                participant.reason,
                json.dumps(reply) if reply is not None else None,
            ),
        )

    def participants(self, job_id: str) -> list[Participant]:
        rows = self.conn.execute(
            "SELECT peer, decision, reason, reply FROM participants WHERE job_id = ? ORDER BY peer", (job_id,)
        )
        return [
            Participant.from_json({"peer": p, "decision": d, "reason": r, "reply": json.loads(x) if x else None})
            for p, d, r, x in rows
        ]

    def participant(self, job_id: str, peer: str) -> Participant | None:
        return next((p for p in self.participants(job_id) if p.peer == peer), None)

    # models -------------------------------------------------------------------------
    def add_model(self, job_id: str, version: int, directory: Path, signer: str) -> None:
        self.conn.execute(
            "INSERT INTO models (job_id, version, dir, signer, created) VALUES (?, ?, ?, ?, ?)",
            (job_id, version, str(directory.relative_to(self.state_dir)), signer, now()),
        )

    def models(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT job_id, version, dir, signer, created FROM models ORDER BY created, job_id")
        return [{"job_id": j, "version": v, "dir": d, "signer": s, "created": c} for j, v, d, s, c in rows]

    def model(self, job_id: str) -> tuple[int, Path, str] | None:
        """The newest version of the model of `job_id`: (version, directory, signer)."""
        row = self.conn.execute(
            "SELECT version, dir, signer FROM models WHERE job_id = ? ORDER BY version DESC LIMIT 1", (job_id,)
        ).fetchone()
        return (row[0], self.state_dir / row[1], row[2]) if row else None


def _job_row(row: tuple[Any, ...]) -> JobRow:
    job_id, owner, host, hosting, source, state, detail, envelope, spent, created, updated = row
    return JobRow(
        job_id,
        owner,
        host,
        bool(hosting),
        source,
        state,
        detail,
        json.loads(envelope),
        json.loads(spent) if spent else None,
        created,
        updated,
    )
