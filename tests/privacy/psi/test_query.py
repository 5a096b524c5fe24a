"""Anonymous query: labels only for what was asked, quotas, epochs, bad requests."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedsilo.errors import DataError, ProtocolError, QuotaExceeded, StaleEpoch
from fedsilo.privacy.psi import EncryptedTable, ListHolder, MemoryQuota, Querier, SQLiteQuota, canonical
from fedsilo.privacy.psi.wire import HEADER

LIST = [("LEI-0001", "high"), ("LEI-0002", "low"), ("lei-0003", "flag:sanctions"), ("LEI-0004", "1250000.00")]


def _holder(limit=100, quota=None, **kw):
    holder = ListHolder("hq-risk", quota or MemoryQuota(limit), **kw)
    return holder, holder.publish(LIST)


def test_querier_reads_exactly_the_labels_it_asked_for():
    holder, table = _holder()
    querier = Querier(table.to_bytes())
    pending = querier.ask(["lei-0004", "LEI-9999", " LEI-0001 ", "LEI-0003"])
    assert pending.open(holder.answer("bank-a", pending.request)) == ["1250000.00", None, "high", "flag:sanctions"]


def test_an_identifier_not_on_the_list_decrypts_no_label(monkeypatch):
    holder, table = _holder()
    opened = []
    monkeypatch.setattr(EncryptedTable, "_open", lambda self, key, tag, ct: opened.append(tag) or "x")
    pending = Querier(table).ask(["LEI-7777", "LEI-8888"])
    assert pending.open(holder.answer("bank-a", pending.request)) == [None, None]
    assert opened == []  # no entry was even tried: no tag matched


def test_table_and_messages_carry_no_identifier_label_or_plain_hash():
    holder, table = _holder()
    pending = Querier(table).ask(["LEI-0001", "LEI-0002"])
    answer = holder.answer("bank-a", pending.request)
    wire = table.to_bytes() + pending.request + answer
    for ident, label in LIST:
        c = canonical(ident, "id")
        for needle in (
            ident.encode(),
            c,
            label.encode(),
            hashlib.sha256(c).digest(),
            hashlib.sha256(ident.encode()).digest(),
        ):
            assert needle not in wire
    # The holder sees fresh random elements: asking the same identifier twice looks different.
    again = Querier(table).ask(["LEI-0001", "LEI-0001"])
    assert again.request[HEADER : HEADER + 32] != again.request[HEADER + 32 : HEADER + 64]


def test_labels_are_padded_to_one_width():
    _, table = _holder(label_width=16)
    assert table.ciphertexts.shape == (4, 2 + 16 + 16)
    with pytest.raises(DataError, match="label width"):
        ListHolder("l", MemoryQuota(1), label_width=4).publish([("a", "too long")])


def test_quota_is_enforced_and_counts_only():
    holder, table = _holder(limit=5)
    querier = Querier(table)
    first = querier.ask(["LEI-0001", "LEI-0002", "LEI-0003"])
    holder.answer("bank-a", first.request)
    with pytest.raises(QuotaExceeded, match="2 of its 5 left"):
        holder.answer("bank-a", querier.ask(["LEI-0001", "LEI-0002", "LEI-0004"]).request)
    holder.answer("bank-b", querier.ask(["LEI-0001", "LEI-0002", "LEI-0004"]).request)  # another querier's own quota
    last = querier.ask(["LEI-0004", "LEI-0002"])
    assert last.open(holder.answer("bank-a", last.request)) == ["1250000.00", "low"]
    records = holder.quota.records("bank-a")
    assert [(r.count, r.granted) for r in records] == [(3, True), (3, False), (2, True)]
    assert holder.quota.used("bank-a") == 5


def test_sqlite_quota_persists_and_windows(tmp_path):
    path = tmp_path / "quota.sqlite"
    with SQLiteQuota(path, limit=4, window=60) as quota:
        assert quota.consume("bank-a", 3, now=1000.0) == 1
        with pytest.raises(QuotaExceeded):
            quota.consume("bank-a", 2, now=1010.0)
    with SQLiteQuota(path, limit=4, window=60) as quota:  # reopened: the usage survived
        assert quota.used("bank-a", now=1020.0) == 3
        assert quota.consume("bank-a", 4, now=1061.0) == 0  # the first grant left the window
        assert [(r.count, r.granted) for r in quota.records()] == [(3, True), (2, False), (4, True)]
        columns = [row[1] for row in quota._conn.execute("PRAGMA table_info(query_requests)")]
    assert columns == ["querier", "at", "count", "granted"]  # counts only, never identifiers


def test_stale_epoch_refused_after_rotation_and_new_table_works():
    holder, old_table = _holder()
    stale = Querier(old_table).ask(["LEI-0001"])
    assert holder.rotate() == 2
    with pytest.raises(StaleEpoch, match="epoch 1 .* epoch 2"):
        holder.answer("bank-a", stale.request)
    new_table = holder.publish(LIST)
    assert new_table.tags.tobytes() != old_table.tags.tobytes()
    fresh = Querier(new_table).ask(["LEI-0001"])
    answer = holder.answer("bank-a", fresh.request)
    assert fresh.open(answer) == ["high"]
    # An answer of the new epoch read against the old table finds nothing.
    relabelled = Querier(old_table).ask(["LEI-0001"])
    with pytest.raises(ProtocolError, match="does not match"):
        relabelled.open(answer)


def test_malformed_requests_are_refused_and_not_charged():
    holder, table = _holder(limit=10)
    request = Querier(table).ask(["LEI-0001", "LEI-0002"]).request
    for bad, match in [
        (request[:-3], "announces"),
        (request[:HEADER] + b"\x00" * 32 + request[HEADER + 32 :], "identity"),
        (request[:HEADER] + b"\xff" * 32 + request[HEADER + 32 :], "not a valid"),
        (request[:8] + request[8:16] + b"\x00" * 8 + request[24:], "another list"),
    ]:
        with pytest.raises(ProtocolError, match=match):
            holder.answer("bank-a", bad)
    assert holder.quota.used("bank-a") <= 4  # the two invalid-element requests were charged, framing errors not


def test_duplicated_identifier_in_the_list_is_refused():
    with pytest.raises(DataError, match="appears twice"):
        ListHolder("l", MemoryQuota(1)).publish([("LEI-1", "a"), ("lei-1 ", "b")])


def test_tampered_table_is_refused():
    _, table = _holder()
    data = bytearray(table.to_bytes())
    with pytest.raises(ProtocolError, match="length"):
        EncryptedTable.from_bytes(bytes(data[:-1]))
    tags = np.array(table.tags)
    swapped = EncryptedTable(table.list_hash, table.epoch, table.label_width, tags[::-1].copy(), table.ciphertexts)
    with pytest.raises(ProtocolError, match="sorted"):
        EncryptedTable.from_bytes(swapped.to_bytes())


def test_forged_label_fails_authentication():
    holder, table = _holder()
    cts = np.array(table.ciphertexts)
    cts[:, 5] ^= 1
    forged = EncryptedTable(table.list_hash, table.epoch, table.label_width, table.tags, cts)
    pending = Querier(forged).ask(["LEI-0002"])
    with pytest.raises(ProtocolError, match="authentication"):
        pending.open(holder.answer("bank-a", pending.request))
