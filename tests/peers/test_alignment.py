"""Sample alignment through PSI: same customers row for row, no raw id on the wire."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsilo.errors import DataError
from fedsilo.peers.alignment import AlignmentSide, align_local


def _tables(seed=0):
    rng = np.random.default_rng(seed)
    bank = pd.DataFrame({"customer": [f"C{i:05d}" for i in rng.permutation(300)], "limit": rng.random(300)})
    broker_ids = [f"c{i:05d} " for i in rng.permutation(np.arange(200, 500))]  # other spelling, overlap 200..299
    broker = pd.DataFrame({"client_no": broker_ids, "trades": rng.integers(0, 50, 300)})
    return bank, broker


def test_rows_align_on_shared_customers():
    bank, broker = _tables()
    rows_bank, rows_broker = align_local(bank, "customer", broker, "client_no")
    assert len(rows_bank) == len(rows_broker) == 100
    left = bank["customer"].iloc[rows_bank].str.lower().tolist()
    right = broker["client_no"].iloc[rows_broker].str.strip().tolist()
    assert left == right
    assert sorted(left) == [f"c{i:05d}" for i in range(200, 300)]
    assert left != sorted(left)  # the common order is pseudorandom, not either side's


def test_frames_between_the_two_sides_carry_no_id():
    bank, broker = _tables(1)
    a = AlignmentSide(bank, "customer", "receiver")
    b = AlignmentSide(broker, "client_no", "sender")
    wire = []
    for frame in a.request_frames():
        wire.append(frame)
        for reply in b.handle(frame):
            wire.append(reply)
            for back in a.handle(reply):
                wire.append(back)
                b.handle(back)
    assert (a.rows().size, b.rows().size) == (100, 100)
    blob = b"".join(wire)
    for ident in list(bank["customer"]) + list(broker["client_no"]):
        assert ident.encode() not in blob and ident.strip().lower().encode() not in blob


def test_bad_id_column_is_refused():
    bank, _ = _tables()
    with pytest.raises(DataError, match="not in the table"):
        AlignmentSide(bank, "nope", "receiver")
    bank.loc[3, "customer"] = None
    with pytest.raises(DataError, match="missing"):
        AlignmentSide(bank, "customer", "receiver")
