"""Per-operation cost of the two crypto suites, side by side (issue 22's cost question, primitive level).

Times each `CryptoSuite` operation (sign, verify, kdf, seal and open of 1 MiB, hash of 1 MiB)
under `standard` and `gm` in the same run and prints gm's time as a ratio of standard's. The
protocol-level figures the issue asks for (a SecAgg+ round, PSI 100k x 100k, 100 model pulls)
wait on the suite being wired into those protocols. A measurement, not a pass/fail test.

    python bench/crypto_suite.py
    python bench/crypto_suite.py --repeat 500
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from fedsilo.privacy.crypto_suite import SUITES, CryptoSuite, get_suite

MIB = os.urandom(1 << 20)
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
    heavy = max(1, repeat // 20)
    return {
        "sign (512 B)": _per_call(lambda: suite.sign(key, MESSAGE), repeat),
        "verify (512 B)": _per_call(lambda: suite.verify(public, MESSAGE, signature), repeat),
        "kdf (32 B out)": _per_call(lambda: suite.kdf(b"s" * 32, b"info"), repeat),
        "seal 1 MiB": _per_call(lambda: suite.seal(aead_key, MIB), heavy),
        "open 1 MiB": _per_call(lambda: suite.open(aead_key, sealed), heavy),
        "hash 1 MiB": _per_call(lambda: suite.hash(MIB), heavy),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    results = {name: measure(get_suite(name), args.repeat) for name in SUITES}
    print(f"{'operation':<16} {'standard µs':>12} {'gm µs':>12} {'gm / standard':>14}")
    for operation in results["standard"]:
        standard, gm = results["standard"][operation], results["gm"][operation]
        print(f"{operation:<16} {standard * 1e6:>12.1f} {gm * 1e6:>12.1f} {gm / standard:>14.2f}")


if __name__ == "__main__":
    main()
