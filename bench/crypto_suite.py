"""Per-operation cost of the two crypto suites, side by side (issue 22's cost question, primitive level).

Times each `CryptoSuite` operation (sign, verify, kdf, seal and open of 1 MiB, hash of 1 MiB,
key agreement, 1 MiB of keystream) under `standard` and `gm` in the same run and prints gm's
time as a ratio of standard's; then one SecAgg+ round of `--peers` peers (10) under each suite,
in process (every peer's client and the server, signed advertisements and survivor lists, no
network), at each `--secagg-dim` (model sizes). A measurement, not a pass/fail test.

    python bench/crypto_suite.py
    python bench/crypto_suite.py --repeat 500 --rounds 3 --secagg-dim 1000 100000
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from fedsilo.privacy.crypto_suite import SUITES, CryptoSuite, get_suite

MIB = os.urandom(1 << 20)
ZEROS = bytes(1 << 20)
MESSAGE = os.urandom(512)


def _per_call(fn: Callable[[], object], repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def measure(suite: CryptoSuite, repeat: int) -> dict[str, float]:
    key = suite.generate_signing_key()
    public = suite.signing_public_key(key)
    signature = suite.sign(key, MESSAGE)
    aead_key = os.urandom(suite.aead_key_sizes[0])
    sealed = suite.seal(aead_key, MIB)
    agreement, (_, peer_public) = suite.agreement_keypair(), suite.agreement_keypair()
    heavy = max(1, repeat // 20)
    return {
        "sign (512 B)": _per_call(lambda: suite.sign(key, MESSAGE), repeat),
        "verify (512 B)": _per_call(lambda: suite.verify(public, MESSAGE, signature), repeat),
        "kdf (32 B out)": _per_call(lambda: suite.kdf(b"s" * 32, b"info"), repeat),
        "seal 1 MiB": _per_call(lambda: suite.seal(aead_key, MIB), heavy),
        "open 1 MiB": _per_call(lambda: suite.open(aead_key, sealed), heavy),
        "hash 1 MiB": _per_call(lambda: suite.hash(MIB), heavy),
        "agree": _per_call(lambda: suite.agree(agreement[0], peer_public), max(1, repeat // 4)),
        "keystream 1 MiB": _per_call(lambda: suite.keystream(MIB[:32], b"mask").update(ZEROS), heavy),
    }


def secagg_round(suite_name: str, peers: int, dim: int) -> float:
    """Seconds for one authenticated SecAgg+ round of `peers` peers under `suite_name`, no dropout."""
    import numpy as np

    from fedsilo.privacy.secagg import SecAggClient, SecAggConfig, SecAggServer
    from fedsilo.privacy.secagg.auth import SuiteDirectory, SuiteIdentity

    suite = get_suite(suite_name)
    config = SecAggConfig(clip=1.0, bits=24, max_weight=1.0, session_id=b"bench", suite=suite_name)
    nodes = list(range(1, peers + 1))
    signers = {u: SuiteIdentity(f"bank-{u}", suite, suite.generate_signing_key()) for u in nodes}
    directory = SuiteDirectory(suite, {s.name: s.public_key() for s in signers.values()})
    rng = np.random.default_rng(0)
    inputs = {u: rng.uniform(-1, 1, dim) for u in nodes}
    start = time.perf_counter()
    server = SecAggServer(config, 1, nodes, dim, verifier=directory)
    clients = {u: SecAggClient(u, config, signer=signers[u], verifier=directory) for u in nodes}
    setup = server.setup
    for u, client in clients.items():
        server.receive_advertise(u, client.advertise_keys(1, setup.participants, setup.round_seed))
    for u, request in server.end_advertise().items():
        server.receive_shares(u, clients[u].share_keys(1, request.peer_keys))
    for u, request in server.end_share_keys().items():
        server.receive_masked_input(u, clients[u].mask_input(1, inputs[u], 1.0, request.shares))
    for u, request in server.end_mask_input().items():
        server.receive_consistency(u, clients[u].sign_survivors(1, request.survivors, request.dropped))
    for u, request in server.end_consistency().items():
        server.receive_unmask(u, clients[u].unmask(1, request.survivors, request.dropped, request.signatures))
    result = server.aggregate()
    elapsed = time.perf_counter() - start
    assert np.max(np.abs(result.average - np.mean([inputs[u] for u in nodes], axis=0))) < 1e-5
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--peers", type=int, default=10, help="peers of the SecAgg+ round")
    parser.add_argument("--rounds", type=int, default=2, help="SecAgg+ rounds per suite and size (the best is kept)")
    parser.add_argument("--secagg-dim", type=int, nargs="+", default=[1_000, 100_000], help="model sizes")
    args = parser.parse_args()
    results = {name: measure(get_suite(name), args.repeat) for name in SUITES}
    print(f"{'operation':<16} {'standard µs':>12} {'gm µs':>12} {'gm / standard':>14}")
    for operation in results["standard"]:
        standard, gm = results["standard"][operation], results["gm"][operation]
        print(f"{operation:<16} {standard * 1e6:>12.1f} {gm * 1e6:>12.1f} {gm / standard:>14.2f}")
    print(f"\nSecAgg+ round, {args.peers} peers in process (best of {args.rounds})")
    print(f"{'model size':<16} {'standard ms':>12} {'gm ms':>12} {'gm / standard':>14}")
    for dim in args.secagg_dim:
        best = {name: min(secagg_round(name, args.peers, dim) for _ in range(args.rounds)) for name in SUITES}
        standard, gm = best["standard"], best["gm"]
        print(f"{dim:<16,} {standard * 1e3:>12.1f} {gm * 1e3:>12.1f} {gm / standard:>14.2f}")


if __name__ == "__main__":
    main()
