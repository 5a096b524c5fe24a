"""A vertical job (the coded scheme) between two real daemons over mTLS on 127.0.0.1, to a pulled model and scores.

The broker (host, label holder) and the bank (feature party) hold the synthetic vertical
scenario's columns (`fedsilo.simulations.vertical`: the same dealing of customers as
`fedsilo simulate --setup vertical`). Checked from each side: the bank's ledger commits
exactly the reserved PureMechanism(ε, 1), the broker's nothing; what the bank's daemon
receives for the release is byte-identical whatever the broker's labels; a second release
is refused; scoring charges the broker's quota at the bank and is refused over it (nothing
drawn) and once the model is withdrawn.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fedsilo.cli import main
from fedsilo.peers.daemon import signed_job
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.data.bank import TEST, TRAIN
from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.vertical.messages import BatchRequest
from fedsilo.peers.vertical.network import BankRelease, release_plan
from fedsilo.privacy.accounting import PureMechanism
from fedsilo.simulations.data.schemas import synthetic_transfer_table
from fedsilo.simulations.vertical import HOLDER_COLUMNS, LABEL, PARTY_COLUMNS, deal_customers
from tests.peers.daemon._consortium import OWNER, make_consortium, member_client, run, running, signed

pytestmark = pytest.mark.slow

POLICY = (
    'model-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\nmin-participants = 2\n'
    'setups = ["vertical"]\nvertical-label-holders = ["broker"]\n'
)
SCORE_QUOTA = 30


def _data(root: Path, customers: int = 2400, seed: int = 0) -> list[str]:
    """Write the broker's and the bank's tables (ids `customer-N`); the broker's ids."""
    table = synthetic_transfer_table(seed=seed, customers=customers)
    broker_rows, bank_rows = deal_customers(len(table), 0.6, seed)
    broker = table.iloc[broker_rows][[*HOLDER_COLUMNS, LABEL]].rename(columns={LABEL: "Y"})
    broker.insert(0, "ID", [f"customer-{r}" for r in broker_rows])
    bank = table.iloc[bank_rows][list(PARTY_COLUMNS)].copy()
    bank.insert(0, "ID", [f"customer-{r}" for r in bank_rows])
    broker.to_csv(root / "broker" / "data.csv", index=False)
    bank.to_csv(root / "bank" / "data.csv", index=False)
    return list(broker["ID"])


def _configure(consortium) -> None:
    consortium.write_peer_toml("broker", policy=POLICY)
    consortium.write_peer_toml("bank", policy=POLICY)
    with open(consortium.config_path("bank"), "a") as handle:
        handle.write(
            '\n[lists.credit-card]\npath = "data.csv"\nid-column = "ID"\npsi = ["broker"]\npsi-modes = ["both"]\n'
            f'psi-protocols = ["dh"]\npsi-quota = 100000\nqueriers = {{ broker = {SCORE_QUOTA} }}\n'
        )


class _Later(dt.datetime):
    """The clock two hours ahead (signed_job's view of now)."""

    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        return dt.datetime.now(tz) + dt.timedelta(hours=2)


async def _wait(client, address: str, job_id: str, states=("finished", "failed", "cancelled")) -> dict:
    for _ in range(600):
        view = await client.call("GET", f"{address}/v1/jobs/{job_id}")
        if view["state"] in states:
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {view}")


def test_a_vertical_job_runs_between_two_daemons_to_a_verified_model_and_scores(tmp_path, capsys, monkeypatch):
    consortium = make_consortium(tmp_path / "c", peers=("broker", "bank"), rows=10)
    ids = _data(consortium.root)
    _configure(consortium)
    job_file = consortium.job_toml(tmp_path / "job.toml", "vertical-1", ["broker", "bank"], extra='setup = "vertical"')
    flipped_file = consortium.job_toml(
        tmp_path / "job2.toml", "vertical-2", ["broker", "bank"], extra='setup = "vertical"'
    )

    async def body() -> None:
        async with running(consortium) as services:
            bank = services["bank"]
            received: dict[str, list] = {"align": [], "release": []}
            for name in received:  # what the bank's daemon receives after TLS, as the bank sees it
                original = getattr(bank.vertical, name)

                async def tap(caller, job_id, request_body, _original=original, _name=name):
                    received[_name].append((job_id, request_body))
                    return await _original(caller, job_id, request_body)

                setattr(bank.vertical, name, tap)
            broker_url, bank_url = consortium.addresses["broker"], consortium.addresses["bank"]
            async with member_client(consortium, OWNER) as owner:
                await owner.call("POST", f"{broker_url}/v1/jobs", signed(consortium, job_file))
                view = await _wait(owner, broker_url, "vertical-1")
                assert view["state"] == "finished", view

                # 1. the model: pulled from the host and verified (signature, hashes)
                card = await pull_model(owner, broker_url, "vertical-1", tmp_path / "pulled")
                assert card["setup"] == "vertical" and card["scheme"] == "coded"
                metrics = json.loads((tmp_path / "pulled" / "metrics.json").read_text())
                assert 0.0 < card["metrics"]["final_auc"] == metrics["vertical_auc_shared"] < 1.0
                spending = {p["peer"]: (p["spent"], p["epsilon"]) for p in card["participants"]}
                assert spending == {"broker": ([], 0.0), "bank": ([{"pure_epsilon": 1.0, "steps": 1}], 1.0)}
                assert metrics["feature_party_spent"] == [{"pure_epsilon": 1.0, "steps": 1}]
                assert sorted(p.name for p in (tmp_path / "pulled").iterdir()) == [
                    "encoder.json",
                    "metrics.json",
                    "model.safetensors",
                    "model_card.json",
                    "model_card.sig",
                ]

                # 2. each ledger holds exactly its spending: the bank the reserved PureMechanism, the broker nothing
                bank_record = bank.ledger.jobs("credit-card")["vertical-1"]
                broker_record = services["broker"].ledger.jobs("credit-card")["vertical-1"]
                assert bank_record.state == "committed" and list(bank_record.mechanisms) == [PureMechanism(1.0, 1)]
                assert broker_record.state == "committed" and list(broker_record.mechanisms) == []
                assert bank.ledger.status("credit-card").spent_epsilon == pytest.approx(1.0)
                assert services["broker"].ledger.status("credit-card").spent_epsilon == 0.0

                # 3. alignment audited at both ends (PSI answered at the bank, run at the broker)
                bank_actions = [e.action for e in bank.store.audit.entries()]
                broker_actions = [e.action for e in services["broker"].store.audit.entries()]
                assert {"psi.answer", "psi.confirm", "vertical.align", "vertical.release"} <= set(bank_actions)
                assert {"psi.run", "vertical.receive", "model.publish"} <= set(broker_actions)
                state = BankRelease(consortium.root / "bank" / "state" / "vertical" / "vertical-1", 0)
                rows, _ = state.alignment()
                released_before = np.load(state.directory / "released.npy")
                assert (released_before[rows] >= 0).all() and (released_before >= 0).sum() == len(rows)

            # 4. attacker: the broker asks for the same customers' codes again -> refused, nothing drawn
            async with member_client(consortium, "broker") as broker:
                again = {"requests": [received["release"][0][1]["requests"][0]]}
                with pytest.raises(PeerUnreachable, match="409.*released already.*no double spend"):
                    await broker.call("POST", f"{bank_url}/v1/jobs/vertical-1/vertical/release", again)
            assert np.array_equal(np.load(state.directory / "released.npy"), released_before)
            assert bank.ledger.status("credit-card").spent_epsilon == pytest.approx(1.0)

            # 5. attacker: the bank, with every byte it receives. The same job with every label flipped:
            # the release request is byte-identical, the alignment request differs only in PSI randomness.
            frame = consortium.root / "broker" / "data.csv"
            table = pd.read_csv(frame)
            table["Y"] = 1 - table["Y"]
            table.to_csv(frame, index=False)
            async with member_client(consortium, OWNER) as owner:
                await owner.call("POST", f"{broker_url}/v1/jobs", signed(consortium, flipped_file))
                assert (await _wait(owner, broker_url, "vertical-2"))["state"] == "finished"
            first, second = received["release"][0], received["release"][-1]  # job 1's and job 2's release
            assert (first[0], second[0]) == ("vertical-1", "vertical-2") and first[1] == second[1]
            assert [sorted(b) for _, b in received["align"]] == [["digest", "session"]] * 2
            # and it is rebuilt from public facts alone: the number of shared customers and the job's seed
            sides = release_plan(len(rows), 0.2, 0)
            rebuilt = [
                BatchRequest(1, np.flatnonzero(sides == TRAIN), True).to_bytes(),
                BatchRequest(2, np.flatnonzero(sides == TEST), False).to_bytes(),
            ]
            assert [base64.b64decode(r) for r in first[1]["requests"]] == rebuilt

            # 6. scoring through PSI-aligned keys, two hours later: the signed jobs have expired (valid for 60
            # minutes), the model has not. Charged to the broker's quota at the bank, audited at both ends.
            monkeypatch.setattr(signed_job, "dt", SimpleNamespace(datetime=_Later, timedelta=dt.timedelta, UTC=dt.UTC))
            async with member_client(consortium, OWNER) as owner:
                # a new customer of the broker whom the bank holds: her code is drawn now, once
                bank_ids = pd.read_csv(consortium.root / "bank" / "data.csv")["ID"]
                newcomer = next(i for i in bank_ids if i not in set(ids))
                broker_table = pd.read_csv(frame)
                row = broker_table.iloc[[0]].copy()
                row["ID"] = newcomer
                pd.concat([broker_table, row]).to_csv(frame, index=False)
                wanted = [*ids[:20], newcomer]
                (tmp_path / "ids.txt").write_text("\n".join(wanted) + "\n")
                command = [
                    "score", "vertical-1", "--peer", broker_url, "--ids", tmp_path / "ids.txt",
                    "--identity", consortium.identity_dir(OWNER), "--out", tmp_path / "scores.csv",
                ]  # fmt: skip
                assert await asyncio.to_thread(main, [str(a) for a in command]) == 0
                printed = capsys.readouterr().out
                assert printed.startswith("scored ") and "with vertical job vertical-1" in printed
                written = pd.read_csv(tmp_path / "scores.csv", dtype={"id": str})
                assert list(written["id"]) == wanted
                scores = dict(zip(written["id"], [None if np.isnan(v) else v for v in written["score"]]))
                scored = [v for v in scores.values() if v is not None]
                assert scored and all(0.0 <= v <= 1.0 for v in scored)
                assert len(scored) < len(wanted)  # customers the bank does not hold get no score from this model
                assert scores[newcomer] is not None
                after_first = np.load(state.directory / "released.npy")
                assert (after_first >= 0).sum() == (released_before >= 0).sum() + 1  # only the newcomer drawn
                last = bank.store.audit.entries()[-1]
                assert (
                    last.action == "vertical.score" and f"{len(scored)} codes answered (1 released now" in last.detail
                )
                # asked again: her stored code, nothing drawn
                await owner.call("POST", f"{broker_url}/v1/jobs/vertical-1/score", {"ids": [newcomer]})
                assert np.array_equal(np.load(state.directory / "released.npy"), after_first)
                assert [e.action for e in services["broker"].store.audit.entries()][-1] == "vertical.score"

                # bad input is refused at the label holder before anything reaches the bank
                seen_at_bank = len(bank.store.audit.entries())
                for request, fragment in (
                    ({"ids": ["nobody-here"]}, "400: 1 of the ids are not in this peer's source credit-card"),
                    ({"ids": [ids[0], ids[0]]}, "400: the ids list a customer twice"),
                    ({"ids": []}, "400: the body is"),
                ):
                    with pytest.raises(PeerUnreachable, match=fragment):
                        await owner.call("POST", f"{broker_url}/v1/jobs/vertical-1/score", request)
                assert len(bank.store.audit.entries()) == seen_at_bank

                # over the quota: refused, nothing drawn or counted, ledger unchanged
                with pytest.raises(PeerUnreachable, match="429"):
                    await owner.call("POST", f"{broker_url}/v1/jobs/vertical-1/score", {"ids": ids[20:60]})
                assert np.array_equal(np.load(state.directory / "released.npy"), after_first)
                assert bank.ledger.status("credit-card").spent_epsilon == pytest.approx(
                    2.0
                )  # the two jobs, nothing more

                # withdrawn model (the job cancelled by its owner): refused at the host and at the bank
                await owner.call("POST", f"{broker_url}/v1/jobs/vertical-1/cancel", {})
                for _ in range(50):
                    if bank.store.job("vertical-1").state == "cancelled":
                        break
                    await asyncio.sleep(0.1)
                assert bank.store.job("vertical-1").state == "cancelled"
                with pytest.raises(PeerUnreachable, match="409.*withdrawn"):
                    await owner.call("POST", f"{broker_url}/v1/jobs/vertical-1/score", {"ids": ids[:2]})
            async with member_client(consortium, "broker") as broker:
                with pytest.raises(PeerUnreachable, match="409.*withdrawn"):
                    await broker.call("POST", f"{bank_url}/v1/jobs/vertical-1/vertical/score", {"session": "00" * 16})
            assert bank.ledger.jobs("credit-card")["vertical-1"].state == "committed"

    run(body())
