"""`fedsilo peer check-noise`: the mechanism check at a deployed peer, on request, on its own machine.

It reads the job file a model owner would submit (checked as a peer checks a job: a job
asking for seeded noise is refused) and the peer's own table, and runs
`fedsilo.peers.mechanism_check.check_mechanism` with the code the peer's ClientApp runs: one
noisy step replayed twice and once as the host would recompute it. Nothing leaves the
machine and no budget is spent; it prints the verdict and fails (exit 2) when the check
fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "check-noise",
        help="check this peer's DP noise: fresh, of the planned scale, "
        "not reproducible by a host (local, spends no budget)",
    )
    check.add_argument("--job", required=True, type=Path, help="the job.toml to check against (its DP plan)")
    check.add_argument("--data", required=True, help="this peer's CSV/Parquet table, with the job's label column")
    check.set_defaults(handler=check_noise)


def check_noise(args: argparse.Namespace) -> int:
    from fedsilo.errors import PrivacyAuditFailed
    from fedsilo.peers.daemon.signed_job import job_document, parse_document
    from fedsilo.peers.data.bank import encode_bank, read_table
    from fedsilo.peers.data.encoding import TabularEncoder
    from fedsilo.peers.mechanism_check import check_mechanism
    from fedsilo.peers.models import build_model, get_weights

    job, _ = parse_document(job_document(args.job, owner="check-noise"))
    frame = read_table(args.data)
    encoder = TabularEncoder.fit_frames([frame], job.label)
    data = encode_bank(frame, encoder, job.train.test_fraction, job.train.seed)
    weights = get_weights(build_model(job.model, data.x_train.shape[1], seed=job.train.seed))
    result = check_mechanism(job, data.x_train, data.y_train, weights, bank_seed=0)
    if result is None:
        print(f"check-noise: not applicable: dp.mode {job.dp.mode} adds no DP-SGD noise at a peer")
        return 0
    print(
        f"check-noise: {result.coordinates} coordinates; two replays differ by sd {result.replay_sd:.4g}, a host's "
        f"recomputation by {result.host_sd:.4g}; planned {result.expected_sd:.4g}, accepted "
        f"[{result.interval[0]:.4g}, {result.interval[1]:.4g}] at {result.confidence:.2%}"
    )
    if not result.passed:
        raise PrivacyAuditFailed(f"check-noise {result.verdict}")
    print(f"check-noise: {result.verdict}")
    return 0
