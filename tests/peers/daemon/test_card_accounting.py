"""The signed model card states the RDP figure beside each participant's reported (PRV) ε."""

import datetime as dt

import pytest

from fedsilo.peers.daemon.card import build_card
from fedsilo.peers.daemon.participants import Acceptance, Participant, Report
from fedsilo.peers.daemon.signed_job import SignedJob
from fedsilo.peers.job import DPSpec, JobConfig
from fedsilo.privacy.accounting import Mechanism, epsilon_spent


def _job() -> SignedJob:
    config = JobConfig(label="Y", encoder_path="", job_id="j1", dp=DPSpec(epsilon=3.0, delta=1e-5))
    return SignedJob(
        job_id="j1",
        owner="risk-dept",
        host="bank-a",
        participants=("bank-a", "bank-b"),
        min_participants=2,
        source="credit-card",
        label="Y",
        nonce="n",
        expires=dt.datetime.now(dt.UTC),
        config=config,
        envelope={"job": {"id": "j1"}},
    )


def _accepted(peer: str, rows: int, n_train: int) -> Participant:
    acceptance = Acceptance(peer, rows, n_train, "sha256", (Mechanism(1.3, 0.05, 60),), 1e-5, "prv", "key")
    return Participant(peer, "accepted", "", acceptance)


def test_card_puts_the_rdp_figure_beside_the_prv_epsilon():
    spent = [Mechanism(1.3, 0.05, 20)] * 3
    prv = epsilon_spent(spent, 1e-5, "prv")
    report = Report(tuple(spent), prv, 1e-5, "prv")
    participants = [_accepted("bank-b", 100, 80), _accepted("bank-c", 50, 40)]
    card = build_card(_job(), participants, {"bank-b": report}, {"rounds": []})
    reported, silent = card["participants"]
    assert reported["epsilon"] == prv and reported["accountant"] == "prv"
    assert reported["epsilon_rdp"] == pytest.approx(epsilon_spent(spent, 1e-5, "rdp"), abs=1e-6)
    assert reported["epsilon_rdp"] > prv  # what the tighter accountant bought
    assert silent["epsilon_rdp"] is None and not silent["reported"]
    assert "PRV" in card["privacy"]["accounting"] and "1e-08" in card["privacy"]["accounting"]


def test_a_report_whose_delta_is_not_one_gets_no_rdp_figure_rather_than_a_wrong_one():
    report = Report((Mechanism(1.3, 0.05, 20),), 1.0, 2.0, "prv")
    participants = [_accepted("bank-b", 100, 80)]
    card = build_card(_job(), participants, {"bank-b": report}, {"rounds": []})
    assert card["participants"][0]["epsilon_rdp"] is None
