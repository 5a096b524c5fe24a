"""Where a secure GBDT run spends its time: every bank and server step timed, and a plain run in the same process.

Wraps the SecAgg+ answers of `GBDTBank` (plain rounds and multi-release sessions), two
`SecAggClient` steps, the session client's steps and the `SecAggServer` / session
server stages with wall-clock timers (a measurement only, nothing is replaced), runs
one small federated DP boosting job three ways -- secure sums in multi-release
sessions (the default), secure sums with a full SecAgg+ round per release
(``trees_per_session = 0``, the former path) and a plain federation -- and prints the
seconds per step and the ratios of training times. The machine is shared, so the
times are provisional (docs/gbdt.md, "Where the time goes").

    python bench/gbdt_profile.py                 # 5 banks, 5 trees of depth 3
    python bench/gbdt_profile.py --banks 10 --trees 50 --depth 4 --features-per-tree 6 --arms session,plain
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import tempfile
import time
from typing import Any

from _gbdt_common import arguments, simulate_settings

BANK_STEPS = (
    "exact",
    "advertise",
    "share",
    "mask",
    "sign",
    "unmask",
    "session_keys",
    "session_share",
    "session_accept",
    "session_mask",
    "session_sign",
    "session_unmask",
)
CLIENT_STEPS = ("_open", "mask_input")
SESSION_CLIENT_STEPS = ("keys", "share", "accept", "mask", "sign", "unmask")
SERVER_STEPS = (
    "receive_advertise",
    "end_advertise",
    "receive_shares",
    "end_share_keys",
    "receive_masked_input",
    "end_mask_input",
    "receive_consistency",
    "end_consistency",
    "receive_unmask",
    "aggregate",
)
SESSION_SERVER_STEPS = ("receive_keys", "end_keys", "receive_shares", "end_shares", "receive_accept", "end_accept")


def _timed(cls: type, name: str, key: str, seconds: dict[str, float]) -> None:
    """Replace ``cls.name`` by the same method that adds its wall-clock time to ``seconds[key]``."""
    method = getattr(cls, name)

    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - start

    setattr(cls, name, timed)


def main() -> None:
    parser = arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), banks=5, trees=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default="session,per-round,plain", help="any of session, per-round, plain")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each arm, alternating; the best is kept")
    args = parser.parse_args()

    import fedsilo
    from fedsilo.peers.gbdt.bank import GBDTBank
    from fedsilo.privacy.secagg.client import SecAggClient
    from fedsilo.privacy.secagg.server import SecAggServer
    from fedsilo.privacy.secagg.session import SessionClient
    from fedsilo.privacy.secagg.session_server import SessionServer
    from fedsilo.simulations import gbdt_runner

    seconds: dict[str, float] = collections.defaultdict(float)
    for name in BANK_STEPS:
        _timed(GBDTBank, name, f"bank.{name}", seconds)
    for name in CLIENT_STEPS:
        _timed(SecAggClient, name, f"client.{name}", seconds)
    for name in SESSION_CLIENT_STEPS:
        _timed(SessionClient, name, f"session client.{name}", seconds)
    for name in SERVER_STEPS:  # a session's releases run these stages of `SecAggServer` too
        _timed(SecAggServer, name, "server (release stages)", seconds)
    for name in SESSION_SERVER_STEPS:
        _timed(SessionServer, name, "server (session set-up)", seconds)
    settings_of = gbdt_runner.settings_of
    common = {**simulate_settings(args), "seed": args.seed, "compare": "none"}
    secure = {"dp_mode": "distributed", "epsilon": args.epsilon}
    arms = {
        "session": (secure, settings_of),
        "per-round": (secure, lambda *a: dataclasses.replace(settings_of(*a), trees_per_session=0)),
        "plain": ({"dp_mode": "off", "secure_aggregation": "off"}, settings_of),
    }
    boost = gbdt_runner.boost
    cpu: dict[str, float] = {}

    def cpu_timed_boost(*a: Any, **k: Any) -> Any:  # the training loop's CPU seconds, as others share the machine
        start = time.process_time()
        try:
            return boost(*a, **k)
        finally:
            cpu["last"] = time.process_time() - start

    gbdt_runner.boost = cpu_timed_boost
    train: dict[str, list[float]] = collections.defaultdict(list)
    train_cpu: dict[str, list[float]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-gbdt-profile-") as out:
        for rep in range(args.repeats):  # the arms alternate, so a burst of load does not hit one arm only
            for arm in args.arms.split(","):
                extra, settings = arms[arm]
                seconds.clear()
                gbdt_runner.settings_of = settings
                try:
                    run = fedsilo.simulate(**common, **extra, out=out)
                finally:
                    gbdt_runner.settings_of = settings_of
                card = json.loads((run.run_dir / "model_card.json").read_text())
                train[arm].append(card["metrics"]["train_seconds"])
                train_cpu[arm].append(cpu["last"])
                print(
                    f"{arm} (repeat {rep + 1}): training {train[arm][-1]:.2f} s wall, {train_cpu[arm][-1]:.2f} s CPU, "
                    f"ROC-AUC {run.summary.final_auc:.4f}",
                    flush=True,
                )
                if rep == 0:
                    for key, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
                        print(f"  {key:<32} {value:7.3f} s")
    if "plain" in train:
        for arm in ("session", "per-round"):
            if arm in train:
                print(
                    f"ratio {arm} / plain (provisional, shared machine; best of {args.repeats}): "
                    f"wall {min(train[arm]) / min(train['plain']):.1f}x, "
                    f"CPU {min(train_cpu[arm]) / min(train_cpu['plain']):.1f}x"
                )


if __name__ == "__main__":
    main()
