"""The coded vertical scheme: one k-RR code per shared customer, its refusals, its ledger, and both attackers' views."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedsilo.errors import BudgetExceeded, DataError, ProtocolError
from fedsilo.peers.data.bank import TEST, TRAIN
from fedsilo.peers.vertical.coded import (
    DELINQUENCY_K,
    CodeBudget,
    CodedParty,
    CodesReceived,
    delinquency_codes,
    one_hot,
)
from fedsilo.peers.vertical.messages import BatchRequest, Codes
from fedsilo.privacy.accounting import Mechanism, PureMechanism, epsilon_spent
from fedsilo.privacy.audit.split_learning import reconstruction_r2
from fedsilo.privacy.ledger.sqlite import SQLiteLedger
from fedsilo.privacy.noise_source import SecureNoise
from fedsilo.privacy.vertical import CodeRelease
from fedsilo.simulations.vertical_coded import exchange

DIGEST = "d" * 64


BUDGET = CodeBudget(3.0, 3.0, 1e-5)


def _parties(n: int = 400, budget: CodeBudget | None = BUDGET):
    codes = np.arange(n) % 3
    sides = np.where(np.arange(n) % 5 == 0, TEST, TRAIN)
    party = CodedParty("bank", codes, sides, DIGEST, 3, budget, SecureNoise() if budget else None)
    receiver = CodesReceived("bank", n, DIGEST, 3)
    receiver.connect(party.hello())
    return party, receiver, codes, sides


def test_delinquency_codes_split_the_latest_status_from_earlier_lateness():
    frame = pd.DataFrame(
        {
            c: v
            for c, v in zip(
                ("pay_0", "pay_2", "pay_3", "pay_4", "pay_5", "pay_6"),
                np.array(
                    [
                        [-1, 0, 0, 0, -2, 0],
                        [2, 0, 0, 0, 0, 0],
                        [1, 1, 0, 0, 0, 0],
                        [3, 2, 2, 1, 1, 1],
                        [0, np.nan, 0, 0, 0, 1],
                        [np.nan, 0, -1, -2, 0, 0],
                        [-2, 4, 3, 2, 1, 1],
                        [8, 0, 0, 0, 0, 0],
                    ]
                ).T,
            )
        }
    )
    assert delinquency_codes(frame).tolist() == [0, 3, 2, 3, 1, 0, 1, 3]
    assert delinquency_codes(frame).dtype == np.int64
    with pytest.raises(DataError, match="pay_6"):
        delinquency_codes(frame.drop(columns="pay_6"))


def test_randomized_response_is_exactly_epsilon_in_integers_and_flips_as_stated():
    release = CodeRelease(3, 3.0)
    assert release.keep_words <= math.exp(3.0) * release.other_words  # keep/m ≤ e^ε, exactly
    assert release.keep_probability == pytest.approx(math.exp(3) / (math.exp(3) + 2), abs=1e-15)
    out = release.apply(np.zeros(60_000, dtype=np.int64), SecureNoise())
    freq = np.bincount(out, minlength=3) / len(out)
    assert abs(freq[0] - release.keep_probability) < 0.006 and abs(freq[1] - freq[2]) < 0.006
    with pytest.raises(DataError, match="outside 0 … 2"):
        release.apply(np.array([0, 3]), SecureNoise())


def test_four_ary_randomized_response_of_the_default_code_is_exactly_epsilon():
    release = CodeRelease(DELINQUENCY_K, 3.0)
    assert DELINQUENCY_K == 4
    assert release.keep_words <= math.exp(3.0) * release.other_words  # keep/m ≤ e^ε, exactly in integers
    assert release.keep_words + 3 * release.other_words == 2**64
    assert release.keep_probability == pytest.approx(math.exp(3) / (math.exp(3) + 3), abs=1e-15)
    out = release.apply(np.full(80_000, 2, dtype=np.int64), SecureNoise())
    freq = np.bincount(out, minlength=4) / len(out)
    m = (1 - release.keep_probability) / 3
    assert abs(freq[2] - release.keep_probability) < 0.006
    assert all(abs(freq[c] - m) < 0.004 for c in (0, 1, 3))
    with pytest.raises(DataError, match="outside 0 … 3"):
        release.apply(np.array([0, 4]), SecureNoise())


def test_each_row_is_released_once_and_a_repeat_gets_the_stored_code():
    party, receiver, _, sides = _parties()
    train = np.flatnonzero(sides == TRAIN)
    first, _ = exchange(party, receiver, 1, train, True)
    again, _ = exchange(party, receiver, 2, train[::-1], True)
    assert np.array_equal(again, first[::-1])  # the receiver cannot average repeats away
    assert party.mechanisms() == [PureMechanism(3.0, 1)] and party.spent() == pytest.approx(3.0)
    assert (party.released[sides == TEST] == -1).all()  # held-out rows: not released until scored


def test_the_bank_ledger_holds_one_pure_release_and_refuses_a_second(tmp_path):
    party, receiver, _, sides = _parties()
    exchange(party, receiver, 1, np.flatnonzero(sides == TRAIN), True)
    ledger = SQLiteLedger(tmp_path / "ledger-bank.sqlite")
    ledger.set_budget("bank", 3.0, 1e-5, "prv")
    ledger.reserve("bank", "job", [PureMechanism(3.0, 1)])
    ledger.commit("bank", "job", party.mechanisms())
    ledger.close()
    reopened = SQLiteLedger(tmp_path / "ledger-bank.sqlite")  # the pure mechanism survives the JSON round trip
    assert reopened.status("bank").spent_epsilon == pytest.approx(3.0)
    with pytest.raises(BudgetExceeded):
        reopened.reserve("bank", "second", [PureMechanism(0.1, 1)])
    broker = SQLiteLedger(tmp_path / "ledger-broker.sqlite")
    broker.set_budget("broker", 3.0, 1e-5, "prv")
    broker.reserve("broker", "job", [])
    assert broker.commit("broker", "job", []).spent_epsilon == 0.0


def test_pure_and_gaussian_runs_compose_by_basic_composition():
    gaussian = epsilon_spent([Mechanism(2.0, 1.0, 1)], 1e-5, "prv")
    assert epsilon_spent([Mechanism(2.0, 1.0, 1), PureMechanism(0.5, 2)], 1e-5, "prv") == pytest.approx(gaussian + 1.0)


def test_over_budget_nothing_is_released():
    party, receiver, _, sides = _parties(budget=CodeBudget(3.0, 2.0, 1e-5))
    with pytest.raises(BudgetExceeded, match="bank"):
        exchange(party, receiver, 1, np.flatnonzero(sides == TRAIN), True)
    assert (party.released == -1).all() and party.mechanisms() == []


def test_refusals_of_requests_and_of_codes():
    party, receiver, _, sides = _parties()
    with pytest.raises(DataError, match="outside the agreed"):
        party.answer(BatchRequest(1, np.array([0, 400])))  # a row not in the alignment
    with pytest.raises(DataError, match="held-out"):
        party.answer(BatchRequest(1, np.flatnonzero(sides == TEST)[:3]))
    with pytest.raises(DataError, match="twice"):
        party.answer(BatchRequest(1, np.array([1, 1])))
    receiver.request(7, np.array([1, 2, 3]), True)
    for bad, match in (
        (Codes("bank", 7, 3, np.array([0, 1])), "shape"),
        (Codes("bank", 7, 3, np.array([0, 1, 3])), "outside 0 … 2"),
        (Codes("bank", 8, 3, np.array([0, 1, 2])), "not asked"),
        (Codes("other", 7, 3, np.array([0, 1, 2])), "not asked"),
        (Codes("bank", 7, 4, np.array([0, 1, 2])), "model takes 3"),
    ):
        with pytest.raises((DataError, ProtocolError), match=match):
            receiver.receive(bad)
    with pytest.raises(DataError, match="NaN"):
        receiver.receive(Codes("bank", 7, 3, np.array([0.0, np.nan, 1.0])))
    assert (receiver.codes == -1).all()  # nothing kept from a refused answer
    assert receiver.receive(Codes("bank", 7, 3, np.array([2, 0, 1]))).tolist() == [2, 0, 1]
    with pytest.raises(ProtocolError, match="not asked"):  # the batch is closed
        receiver.receive(Codes("bank", 7, 3, np.array([2, 0, 1])))
    with pytest.raises(ProtocolError, match="alignment"):
        receiver.connect({**party.hello(), "digest": "e" * 64})
    frame = Codes("bank", 1, 3, np.array([0, 1, 2])).to_bytes()
    assert Codes.from_bytes(frame).codes.tolist() == [0, 1, 2]
    with pytest.raises(ProtocolError):
        Codes.from_bytes(frame[:-1])


def test_the_bank_receives_positions_only_whatever_the_labels():
    """Attacker: the bank, with every frame it receives. They carry positions and a flag, nothing label-dependent."""
    party, receiver, _, sides = _parties()
    seen: list[bytes] = []
    tap = lambda direction, name, frame: seen.append(frame) if direction == "to_party" else None  # noqa: E731
    train = np.flatnonzero(sides == TRAIN)
    exchange(party, receiver, 1, train, True, tap)
    exchange(party, receiver, 2, np.flatnonzero(sides == TEST), False, tap)
    # the frames are a function of the positions and sides alone (the label holder's labels are not an input);
    # rebuilt from those, they are byte-identical, and each is exactly header + 4 bytes per position
    rebuilt = [
        BatchRequest(1, train, True).to_bytes(),
        BatchRequest(2, np.flatnonzero(sides == TEST), False).to_bytes(),
    ]
    assert seen == rebuilt
    assert all(len(f) == 18 + 4 * len(BatchRequest.from_bytes(f).positions) for f in seen)


def test_the_broker_reconstructs_less_of_a_bank_column_from_private_codes():
    """Attacker: the broker, knowing the raw column for 10% of the customers, regresses it on the codes it got."""
    rng = np.random.default_rng(0)
    column = rng.normal(size=6000)
    codes = np.digitize(column, [-0.5, 0.5])
    clear = reconstruction_r2(one_hot(codes, 3), column, 600)
    private = reconstruction_r2(one_hot(CodeRelease(3, 3.0).apply(codes, SecureNoise()), 3), column, 600)
    noisy = reconstruction_r2(one_hot(CodeRelease(3, 0.5).apply(codes, SecureNoise()), 3), column, 600)
    assert clear > 0.75 and private < clear - 0.05 and noisy < 0.15
