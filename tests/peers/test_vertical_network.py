"""The parts of a networked vertical job that need no daemon: the release plan, the order digest, the
feature party's stored state, the PSI result a job aligns on, and the `fedsilo score --peer` refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsilo.cli import main
from fedsilo.errors import DataError
from fedsilo.peers.alignment import AlignmentSide, aligned_rows
from fedsilo.peers.daemon.config import SharedList
from fedsilo.peers.daemon.shared_lists import SharedLists
from fedsilo.peers.data.bank import TEST, TRAIN
from fedsilo.peers.errors import Refused
from fedsilo.peers.vertical.network import BankRelease, order_digest, release_plan
from fedsilo.privacy.psi import Mode, PsiReceiver
from fedsilo.privacy.psi.protocol import exchange
from fedsilo.privacy.psi.wire import split


def test_the_release_plan_holds_out_a_fixed_share_chosen_by_the_public_seed_alone():
    sides = release_plan(1000, 0.2, 7)
    assert (sides == TEST).sum() == 200 and (sides == TRAIN).sum() == 800
    assert np.array_equal(sides, release_plan(1000, 0.2, 7))  # what both sides compute, labels not an input
    assert not np.array_equal(sides, release_plan(1000, 0.2, 8))
    assert list(release_plan(2, 0.2, 0)).count(TEST) == 1  # at least one held out, one kept
    with pytest.raises(DataError, match="the parties share 1 customer"):
        release_plan(1, 0.2, 0)


def test_both_sides_compute_one_order_digest_and_another_intersection_gives_another():
    holder = pd.DataFrame({"id": [f"c{i}" for i in range(50)]})
    party = pd.DataFrame({"id": [f"c{i}" for i in range(20, 90)]})
    a, b = AlignmentSide(holder, "id", "receiver"), AlignmentSide(party, "id", "sender")
    exchange(a.psi, b.psi)
    assert order_digest(a.psi.result()) == order_digest(b.psi.result())
    assert list(holder["id"].iloc[a.rows()]) == list(party["id"].iloc[b.rows()])
    c, d = AlignmentSide(holder, "id", "receiver"), AlignmentSide(party.iloc[:-1], "id", "sender")
    exchange(c.psi, d.psi)
    assert order_digest(c.psi.result()) != order_digest(a.psi.result())


def test_the_feature_partys_state_refuses_a_source_that_changed_and_leaves_no_partial_file(tmp_path):
    state = BankRelease(tmp_path / "job", 10)
    assert state.alignment() is None and (state.released() == -1).all()
    state.save_alignment(np.array([3, 1, 4]), "ab" * 32)
    rows, digest = state.alignment()
    assert list(rows) == [3, 1, 4] and digest == "ab" * 32
    released = state.released()
    released[[3, 1]] = [2, 0]
    state.save_released(released)
    assert list(state.released()[[3, 1, 4]]) == [2, 0, -1]
    assert sorted(p.name for p in state.directory.iterdir()) == ["alignment.json", "released.npy"]
    with pytest.raises(DataError, match="the source changed after codes were released; restore it"):
        BankRelease(tmp_path / "job", 11).released()


def _lists(tmp_path):
    path = tmp_path / "bank.csv"
    pd.DataFrame({"ID": [f"c{i}" for i in range(40)]}).to_csv(path, index=False)
    shared = SharedList("customers", path, "ID", psi=("broker", "other"), psi_modes=("both",))
    return SharedLists({"customers": shared}, tmp_path / "psi"), shared


def _confirmed_run(lists, member: str) -> tuple[bytes, np.ndarray]:
    receiver = PsiReceiver([f"c{i}" for i in range(30, 60)], mode=Mode.TO_BOTH)
    session = receiver.session
    reply = lists.psi(member, "customers", b"".join(receiver.request_frames())).body
    back = [f for frame in split(reply) for f in receiver.handle(frame)]
    lists.confirm(member, "customers", b"".join(back))
    return session, receiver.result()


def test_a_confirmed_psi_aligns_one_job_once_and_only_for_the_member_that_ran_it(tmp_path):
    """Attacker: another member (or the same one twice) presenting the broker's session to the bank."""
    lists, _ = _lists(tmp_path)
    try:
        session, mine = _confirmed_run(lists, "broker")
        with pytest.raises(Refused, match="no confirmed both-sides PSI of other") as refusal:
            lists.take_confirmed("other", "customers", session)
        assert refusal.value.status == 409
        theirs = lists.take_confirmed("broker", "customers", session)
        assert order_digest(theirs) == order_digest(mine) and len(aligned_rows(theirs)) == 10
        with pytest.raises(Refused, match="used already"):
            lists.take_confirmed("broker", "customers", session)
    finally:
        lists.close()


def test_scoring_charges_the_query_quota_and_over_it_counts_nothing(tmp_path):
    from fedsilo.errors import QuotaExceeded

    path = tmp_path / "bank.csv"
    pd.DataFrame({"ID": ["a"]}).to_csv(path, index=False)
    shared = SharedList("customers", path, "ID", psi=("broker",), psi_modes=("both",), queriers=(("broker", 5),))
    lists = SharedLists({"customers": shared}, tmp_path / "psi")
    try:
        assert lists.charge_query(shared, "broker", 3) == 2
        with pytest.raises(QuotaExceeded):
            lists.charge_query(shared, "broker", 3)
        assert lists.charge_query(shared, "broker", 0) == 2  # the refusal took nothing
    finally:
        lists.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["score", "job-1", "--peer", "https://127.0.0.1:1"], "give --ids FILE (one customer id per line)"),
        (["score", "job-1", "--peer", "https://127.0.0.1:1", "--ids", "missing.txt"], "ids file missing.txt"),
        (["score", "some-run"], "local scoring needs --data FILE and --out FILE"),
    ],
)
def test_score_names_what_is_missing(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    if args[1] == "some-run":
        (tmp_path / "some-run").mkdir()
        (tmp_path / "some-run" / "model_card.json").write_text("{}")
    assert main(args) != 0
    assert message in capsys.readouterr().err
