"""The host's typed records of a job's participants, and the check on what a participant reports.

`Acceptance` is what a participant replies when it accepts a proposed job (the same JSON on
the wire and in the host's `participants.reply` column); `Report` is what its accountant
spent, sent once after training and checked against its acceptance (`Report.checked`);
`Participant` is the host's row for one peer of a job: its decision, the reason it gave,
its acceptance and its report.

Each record's `to_json` writes exactly the JSON the daemon has always stored, and
`from_json` reads it back (keys it does not know are ignored), so a state directory
written before these types existed still loads. A record that is not one raises
`DataError` saying which field is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fedsilo.errors import DataError, FedsiloError
from fedsilo.peers.daemon.inputs import finite_number
from fedsilo.peers.errors import Refused
from fedsilo.privacy.accounting import Mechanism, epsilon_spent

DECISIONS = ("pending", "accepted", "declined", "unreachable")
REPORT_KEYS = {"spent", "epsilon", "delta", "accountant", "failed"}


@dataclass(frozen=True)
class Acceptance:
    """A participant's yes to a job: its source's counts and fingerprint (no rows), its DP plan
    (`planned`, at its source's δ and accountant) and its SuperNode's public key."""

    peer: str
    rows: int
    n_train: int
    fingerprint: str
    planned: tuple[Mechanism, ...]
    delta: float
    accountant: str
    node_public_key: str

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": "accepted",
            "peer": self.peer,
            "rows": self.rows,
            "n_train": self.n_train,
            "fingerprint": self.fingerprint,
            "planned": [m.to_dict() for m in self.planned],
            "delta": self.delta,
            "accountant": self.accountant,
            "node_public_key": self.node_public_key,
        }

    @classmethod
    def from_json(cls, data: Any) -> Acceptance:
        """The acceptance in `data` (as `to_json` writes it); DataError if it is not one."""
        if not isinstance(data, dict):
            raise DataError(f"an acceptance is a JSON object, got {type(data).__name__}")
        return cls(
            peer=_field(data, "peer", str),
            rows=_count(data, "rows"),
            n_train=_count(data, "n_train"),
            fingerprint=_field(data, "fingerprint", str),
            planned=_mechanisms(data, "planned"),
            delta=float(_field(data, "delta", (int, float))),
            accountant=_field(data, "accountant", str),
            node_public_key=_field(data, "node_public_key", str),
        )


@dataclass(frozen=True)
class Report:
    """What a participant's accountant spent in a job, as it reported it to the host."""

    spent: tuple[Mechanism, ...]
    epsilon: float
    delta: float
    accountant: str
    failed: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "spent": [m.to_dict() for m in self.spent],
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "failed": self.failed,
        }

    @classmethod
    def from_json(cls, data: Any) -> Report:
        """A report as `to_json` writes it (one already checked when it arrived); DataError if it is not one."""
        if not isinstance(data, dict):
            raise DataError(f"a report is a JSON object, got {type(data).__name__}")
        failed = data.get("failed")
        if failed is not None and not isinstance(failed, str):
            raise DataError("a report's failed is null or a message")
        return cls(
            spent=_mechanisms(data, "spent"),
            epsilon=_field(data, "epsilon", (int, float)),
            delta=_field(data, "delta", (int, float)),
            accountant=_field(data, "accountant", str),
            failed=failed,
        )

    @classmethod
    def checked(cls, body: Any, accepted: Acceptance) -> Report:
        """A participant's report, checked against what it planned when it `accepted`; Refused 400 otherwise.

        The report must name the δ and accountant of its acceptance, mechanisms at the
        planned noise (to 1e-9, relative) and sample rate and of at most the planned steps, and ε finite, equal
        to what those mechanisms cost and at most the planned ε: the card then states only
        numbers within what the participant committed to.
        """
        if not isinstance(body, dict) or not {"spent", "epsilon", "delta"} <= set(body) <= REPORT_KEYS:
            raise Refused("a report is {spent: [mechanisms], epsilon, delta, accountant, failed}", 400)
        if not isinstance(body["spent"], list):
            raise Refused("a report's spent is a list of mechanisms", 400)
        try:
            spent = [Mechanism.from_dict(m) for m in body["spent"]]
        except FedsiloError as exc:
            raise Refused(f"a report's spent is a list of mechanisms ({exc})", 400) from None
        epsilon = finite_number(body["epsilon"], "a report's epsilon")
        delta = finite_number(body["delta"], "its delta")
        accountant, failed = body.get("accountant", accepted.accountant), body.get("failed")
        if delta != accepted.delta or accountant != accepted.accountant:
            raise Refused(
                f"the report names δ = {delta:g} ({accountant!r}); the participant accepted with δ = "
                f"{accepted.delta:g} ({accepted.accountant})",
                400,
            )
        if failed is not None and not (isinstance(failed, str) and len(failed) <= 2000):
            raise Refused("a report's failed is null or a message of at most 2000 characters", 400)
        planned = list(accepted.planned)
        # a distributed-DP plan's multiplier, recomputed with the real parameter count, may differ in its last bits
        outside = [
            m
            for m in spent
            if not any(
                m.sample_rate == p.sample_rate and math.isclose(m.noise_multiplier, p.noise_multiplier, rel_tol=1e-9)
                for p in planned
            )
        ]
        if outside or sum(m.steps for m in spent) > sum(m.steps for m in planned):
            raise Refused(
                f"the report's mechanisms ({sum(m.steps for m in spent)} DP-SGD steps) are not within the "
                f"participant's plan of {sum(m.steps for m in planned)} steps at its planned noise and sample "
                "rate",
                400,
            )
        cost, ceiling = epsilon_spent(spent, delta, accountant), epsilon_spent(planned, delta, accountant)
        if not (0 <= epsilon <= ceiling * (1 + 1e-9) and math.isclose(epsilon, cost, rel_tol=1e-6, abs_tol=1e-9)):
            raise Refused(
                f"the report states ε = {epsilon:.6g}; its mechanisms cost ε = {cost:.6g} and the participant "
                f"planned at most ε = {ceiling:.6g}",
                400,
            )
        return cls(tuple(spent), epsilon, delta, accountant, failed)


@dataclass(frozen=True)
class Participant:
    """The host's row for one peer of a job: `decision` is one of `DECISIONS`; `acceptance` is set
    exactly when it accepted, `report` once it reported its spending."""

    peer: str
    decision: str
    reason: str = ""
    acceptance: Acceptance | None = None
    report: Report | None = None

    def reply_json(self) -> dict[str, Any] | None:
        """The stored `reply` column: the acceptance, with the report under "report" once there is one."""
        if self.acceptance is None:
            return None
        reply = self.acceptance.to_json()
        if self.report is not None:
            reply["report"] = self.report.to_json()
        return reply

    def to_json(self) -> dict[str, Any]:
        return {"peer": self.peer, "decision": self.decision, "reason": self.reason, "reply": self.reply_json()}

    @classmethod
    def from_json(cls, data: Any) -> Participant:
        """A participant as `to_json` writes it (and as the store's row reads); DataError if it is not one."""
        if not isinstance(data, dict):
            raise DataError(f"a participant is a JSON object, got {type(data).__name__}")
        decision = _field(data, "decision", str)
        if decision not in DECISIONS:
            raise DataError(f"a participant's decision is one of {', '.join(DECISIONS)}, got {decision!r}")
        reply = data.get("reply")
        return cls(
            peer=_field(data, "peer", str),
            decision=decision,
            reason=_field(data, "reason", str),
            acceptance=Acceptance.from_json(reply) if reply is not None else None,
            report=Report.from_json(reply["report"]) if reply is not None and "report" in reply else None,
        )


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise DataError(f"the record's {key!r} is missing or not of the right type (got {value!r})")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = _field(data, key, int)
    if value < 0:
        raise DataError(f"the record's {key!r} is a count, got {value}")
    return int(value)


def _mechanisms(data: dict[str, Any], key: str) -> tuple[Mechanism, ...]:
    value = _field(data, key, list)
    try:
        return tuple(Mechanism.from_dict(m) for m in value)
    except FedsiloError as error:
        raise DataError(f"the record's {key!r} is not a list of mechanisms: {error}") from None
