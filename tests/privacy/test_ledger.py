"""Tests of privacy.ledger: both backends, budget refusals, persistence, concurrency."""

import math
import multiprocessing
import threading

import pytest

from fedsilo.errors import BudgetExceeded, ConfigError, LedgerError
from fedsilo.privacy.accounting import Mechanism, epsilon_spent
from fedsilo.privacy.ledger import BudgetStatus, InMemoryLedger, PrivacyLedger, SQLiteLedger

DELTA = 1e-5
JOB = [Mechanism(1.1, 0.01, 500)]  # ε ≈ 1.32 at δ=1e-5 (RDP)
EPS_JOB = epsilon_spent(JOB, DELTA)
EPS_TWO = epsilon_spent(JOB + JOB, DELTA)  # two such jobs composed, ≈ 1.71
BUDGET = 1.9  # room for two jobs (composed), not three


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request, tmp_path):
    if request.param == "memory":
        led = InMemoryLedger()
    else:
        led = SQLiteLedger(tmp_path / "ledger.db")
    yield led
    led.close()


def test_budget_fits_two_jobs_but_not_three():
    # guards the constants the other tests rely on
    assert EPS_TWO <= BUDGET < epsilon_spent(JOB * 3, DELTA) < 3 * EPS_JOB


def test_reserve_commit_release(ledger: PrivacyLedger):
    ledger.set_budget("cards", BUDGET, DELTA)
    assert ledger.sources() == ["cards"]
    fresh = ledger.status("cards")
    assert fresh == BudgetStatus("cards", BUDGET, DELTA, 0.0, 0.0, BUDGET, 0, "rdp")

    assert ledger.reserve("cards", "j1", JOB) == pytest.approx(EPS_JOB)
    st = ledger.status("cards")
    assert (st.spent_epsilon, st.jobs) == (0.0, 1)
    assert st.reserved_epsilon == pytest.approx(EPS_JOB)
    assert st.remaining_epsilon == pytest.approx(BUDGET - EPS_JOB)

    # the projected total composes, it does not add
    assert ledger.reserve("cards", "j2", JOB) == pytest.approx(EPS_TWO)
    assert EPS_TWO < 2 * EPS_JOB

    ledger.commit("cards", "j1", JOB)
    st = ledger.status("cards")
    assert st.spent_epsilon == pytest.approx(EPS_JOB)
    assert st.reserved_epsilon == pytest.approx(EPS_TWO - EPS_JOB)
    assert st.remaining_epsilon == pytest.approx(BUDGET - EPS_TWO)
    assert st.jobs == 2

    ledger.release("cards", "j2")
    st = ledger.status("cards")
    assert st.spent_epsilon == pytest.approx(EPS_JOB)
    assert st.reserved_epsilon == 0.0
    assert st.remaining_epsilon == pytest.approx(BUDGET - EPS_JOB)
    assert st.jobs == 1


def test_over_budget_is_refused_and_changes_nothing(ledger: PrivacyLedger):
    ledger.set_budget("cards", BUDGET, DELTA)
    ledger.reserve("cards", "j1", JOB)
    ledger.reserve("cards", "j2", JOB)
    before = ledger.status("cards")
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("cards", "j3", JOB)
    msg = str(info.value)
    projected = epsilon_spent(JOB * 3, DELTA)
    assert "'cards'" in msg and "'j3'" in msg
    assert f"{projected:.4f}" in msg  # the total the job would bring
    assert f"{BUDGET}" in msg  # the budget
    assert f"{BUDGET - EPS_TWO:.4f}" in msg  # what is left
    assert ledger.status("cards") == before
    # the refused job left no trace: it can reserve once budget is freed
    ledger.release("cards", "j2")
    ledger.reserve("cards", "j3", JOB)


def test_a_single_job_larger_than_the_budget_is_refused(ledger: PrivacyLedger):
    ledger.set_budget("cards", 1.0, DELTA)
    with pytest.raises(BudgetExceeded):
        ledger.reserve("cards", "big", JOB)
    assert ledger.status("cards").jobs == 0


def test_commit_less_than_planned_frees_budget(ledger: PrivacyLedger):
    ledger.set_budget("cards", BUDGET, DELTA)
    ledger.reserve("cards", "j1", JOB)
    ledger.reserve("cards", "j2", JOB)
    with pytest.raises(BudgetExceeded):
        ledger.reserve("cards", "j3", [Mechanism(1.1, 0.01, 300)])
    # j1 stopped early: 100 of its 500 steps
    ledger.commit("cards", "j1", [Mechanism(1.1, 0.01, 100)])
    st = ledger.status("cards")
    assert st.spent_epsilon == pytest.approx(epsilon_spent([Mechanism(1.1, 0.01, 100)], DELTA))
    assert st.remaining_epsilon > BUDGET - EPS_TWO
    ledger.reserve("cards", "j3", [Mechanism(1.1, 0.01, 300)])


def test_commit_exactly_planned_at_the_budget_edge(ledger: PrivacyLedger):
    # the budget is exactly the projected total: committing what was planned must pass,
    # whatever the order (these three runs sum differently in floats by order)
    runs = {
        "j1": [Mechanism(0.75, 0.006, 104)],
        "j2": [Mechanism(1.63, 0.027, 382)],
        "j3": [Mechanism(0.82, 0.043, 69)],
    }
    ledger.set_budget("cards", 10.0, DELTA)
    for job_id, planned in runs.items():
        total = ledger.reserve("cards", job_id, planned)
    ledger.set_budget("cards", total, DELTA)
    for job_id in ("j1", "j2", "j3"):
        ledger.commit("cards", job_id, runs[job_id])
    assert ledger.status("cards").remaining_epsilon == 0.0
    assert ledger.status("cards").spent_epsilon == total


def test_commit_over_budget_is_refused_and_changes_nothing(ledger: PrivacyLedger):
    ledger.set_budget("cards", BUDGET, DELTA)
    ledger.reserve("cards", "j1", JOB)
    ledger.reserve("cards", "j2", JOB)
    before = ledger.status("cards")
    with pytest.raises(BudgetExceeded, match="'cards'"):
        ledger.commit("cards", "j1", JOB * 2)
    assert ledger.status("cards") == before
    ledger.commit("cards", "j1", JOB)  # still reserved, still committable


def test_replan_replaces_a_reservation_or_changes_nothing(ledger: PrivacyLedger):
    ledger.set_budget("cards", BUDGET, DELTA)
    ledger.reserve("cards", "j1", JOB)
    ledger.reserve("cards", "j2", JOB)
    smaller = [Mechanism(1.1, 0.01, 300)]
    assert ledger.replan("cards", "j1", smaller) == pytest.approx(epsilon_spent(smaller + JOB, DELTA))
    assert ledger.jobs("cards")["j1"].mechanisms == tuple(smaller)
    assert ledger.jobs("cards")["j1"].state == "reserved"
    before = ledger.jobs("cards")
    with pytest.raises(BudgetExceeded, match="'j1' would bring"):
        ledger.replan("cards", "j1", JOB * 2)  # three jobs' worth with j2: over the budget
    assert ledger.jobs("cards") == before
    ledger.commit("cards", "j2", JOB)
    with pytest.raises(LedgerError, match="cannot replan job 'j2'.*already committed"):
        ledger.replan("cards", "j2", smaller)
    with pytest.raises(LedgerError, match="cannot replan job 'j9'.*no reservation"):
        ledger.replan("cards", "j9", smaller)
    assert ledger.jobs("cards")["j2"].mechanisms == tuple(JOB)


def test_double_reserve_and_double_commit_are_refused(ledger: PrivacyLedger):
    ledger.set_budget("cards", BUDGET, DELTA)
    ledger.reserve("cards", "j1", JOB)
    with pytest.raises(LedgerError, match="already reserved"):
        ledger.reserve("cards", "j1", JOB)
    ledger.commit("cards", "j1", JOB)
    with pytest.raises(LedgerError, match="already committed"):
        ledger.commit("cards", "j1", JOB)
    with pytest.raises(LedgerError, match="already committed"):
        ledger.reserve("cards", "j1", JOB)
    with pytest.raises(LedgerError, match="already committed"):
        ledger.release("cards", "j1")
    assert ledger.status("cards").spent_epsilon == pytest.approx(EPS_JOB)


def test_unknown_job_is_refused(ledger: PrivacyLedger):
    ledger.set_budget("cards", BUDGET, DELTA)
    with pytest.raises(LedgerError, match="'nope'"):
        ledger.commit("cards", "nope", JOB)
    with pytest.raises(LedgerError, match="'nope'"):
        ledger.release("cards", "nope")


def test_unknown_source_is_refused(ledger: PrivacyLedger):
    ledger.set_budget("cards", BUDGET, DELTA)
    for call in (
        lambda: ledger.status("loans"),
        lambda: ledger.reserve("loans", "j1", JOB),
        lambda: ledger.commit("loans", "j1", JOB),
        lambda: ledger.release("loans", "j1"),
    ):
        with pytest.raises(LedgerError, match="'loans'"):
            call()
    assert ledger.sources() == ["cards"]


def test_sources_are_independent(ledger: PrivacyLedger):
    ledger.set_budget("cards", BUDGET, DELTA)
    ledger.set_budget("loans", BUDGET, 1e-6, accountant="prv")
    ledger.reserve("cards", "j1", JOB)
    ledger.reserve("loans", "j1", JOB)  # same job id on another source is fine
    assert ledger.sources() == ["cards", "loans"]
    assert ledger.status("loans").reserved_epsilon == pytest.approx(epsilon_spent(JOB, 1e-6, "prv"))
    assert ledger.status("loans").accountant == "prv"


@pytest.mark.parametrize(
    "args",
    [
        (0.0, DELTA),
        (-1.0, DELTA),
        (math.nan, DELTA),
        (math.inf, DELTA),
        (1.0, 0.0),
        (1.0, 1.0),
        (1.0, math.nan),
    ],
)
def test_invalid_budget_is_a_config_error(ledger: PrivacyLedger, args):
    with pytest.raises(ConfigError):
        ledger.set_budget("cards", *args)
    assert ledger.sources() == []


def test_invalid_arguments_are_config_errors(ledger: PrivacyLedger):
    with pytest.raises(ConfigError):
        ledger.set_budget("cards", 1.0, DELTA, accountant="gdp")
    with pytest.raises(ConfigError):
        ledger.set_budget("", 1.0, DELTA)
    ledger.set_budget("cards", BUDGET, DELTA)
    with pytest.raises(ConfigError):
        ledger.reserve("cards", "", JOB)
    with pytest.raises(ConfigError):
        ledger.reserve("cards", "j1", [(1.1, 0.01, 500)])
    assert ledger.status("cards").jobs == 0


def test_budget_cannot_be_lowered_below_use(ledger: PrivacyLedger):
    ledger.set_budget("cards", BUDGET, DELTA)
    ledger.reserve("cards", "j1", JOB)
    with pytest.raises(LedgerError, match="already use"):
        ledger.set_budget("cards", 1.0, DELTA)
    with pytest.raises(LedgerError):  # a smaller δ makes the same history cost more ε
        ledger.set_budget("cards", EPS_JOB + 1e-3, 1e-9)
    assert ledger.status("cards").epsilon_budget == BUDGET
    ledger.set_budget("cards", 5.0, DELTA)  # raising is fine
    ledger.set_budget("cards", EPS_JOB, DELTA)  # lowering to exactly what is used is fine
    assert ledger.status("cards").remaining_epsilon == 0.0


# -- SQLite specifics --------------------------------------------------------------


def test_sqlite_survives_close_and_reopen(tmp_path):
    path = tmp_path / "ledger.db"
    with SQLiteLedger(path) as led:
        led.set_budget("cards", BUDGET, DELTA)
        led.reserve("cards", "j1", JOB)
        led.commit("cards", "j1", [Mechanism(1.1, 0.01, 123)])
        led.reserve("cards", "j2", JOB)
        before = led.status("cards")
    with SQLiteLedger(path) as again:
        assert again.sources() == ["cards"]
        assert again.status("cards") == before
        with pytest.raises(LedgerError):
            again.reserve("cards", "j2", JOB)
        again.commit("cards", "j2", JOB)


def test_two_sqlite_ledgers_on_one_file_share_the_budget(tmp_path):
    path = tmp_path / "ledger.db"
    a, b = SQLiteLedger(path), SQLiteLedger(path)
    try:
        a.set_budget("cards", BUDGET, DELTA)
        a.reserve("cards", "from-a", JOB)
        b.reserve("cards", "from-b", JOB)
        with pytest.raises(BudgetExceeded):
            a.reserve("cards", "from-a-2", JOB)
        with pytest.raises(BudgetExceeded):
            b.reserve("cards", "from-b-2", JOB)
        assert a.status("cards") == b.status("cards")
    finally:
        a.close()
        b.close()


def _race(path: str, n: int, barrier, results) -> None:
    """One contender: open its own ledger on the file, wait for all, reserve one job."""
    try:
        led = SQLiteLedger(path)
        try:
            barrier.wait(timeout=30)
            led.reserve("cards", f"job-{n}", JOB)
            results.put("ok")
        finally:
            led.close()
    except BudgetExceeded:
        results.put("refused")
    except BaseException as exc:  # reported, and frees the other contenders
        barrier.abort()
        results.put(f"error: {exc!r}")


def test_racing_threads_cannot_reserve_past_the_budget(tmp_path):
    import queue

    path = str(tmp_path / "ledger.db")
    with SQLiteLedger(path) as led:
        led.set_budget("cards", BUDGET, DELTA)
    barrier, results = threading.Barrier(6), queue.Queue()
    threads = [threading.Thread(target=_race, args=(path, n, barrier, results), daemon=True) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outcomes = sorted(results.get_nowait() for _ in range(6))
    assert outcomes == ["ok", "ok"] + ["refused"] * 4
    with SQLiteLedger(path) as led:
        assert led.status("cards").jobs == 2


@pytest.mark.slow
def test_racing_processes_cannot_reserve_past_the_budget(tmp_path):
    path = str(tmp_path / "ledger.db")
    with SQLiteLedger(path) as led:
        led.set_budget("cards", BUDGET, DELTA)
    ctx = multiprocessing.get_context("fork")  # fast: no re-import of torch
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(path, n, barrier, results)) for n in range(6)]
    try:
        for p in procs:
            p.start()
        outcomes = sorted(results.get(timeout=60) for _ in range(6))
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert outcomes == ["ok", "ok"] + ["refused"] * 4
    with SQLiteLedger(path) as led:
        st = led.status("cards")
        assert st.jobs == 2
        assert st.reserved_epsilon == pytest.approx(EPS_TWO)


def test_a_prv_source_fits_a_job_an_rdp_source_refuses(ledger: PrivacyLedger):
    """The same budget holds more under the tighter (still sound: upper-bound) PRV accounting."""
    three = JOB * 3
    assert epsilon_spent(three, DELTA, "prv") <= BUDGET < epsilon_spent(three, DELTA, "rdp")
    ledger.set_budget("rdp-source", BUDGET, DELTA, "rdp")
    ledger.set_budget("prv-source", BUDGET, DELTA, "prv")
    with pytest.raises(BudgetExceeded):
        ledger.reserve("rdp-source", "j", three)
    assert ledger.reserve("prv-source", "j", three) == pytest.approx(epsilon_spent(three, DELTA, "prv"))
