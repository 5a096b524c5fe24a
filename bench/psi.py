"""Private set intersection and anonymous query: time and memory, against openmined-psi.

1. 100k × 100k PSI, intersection to the receiver (half the identifiers shared):
   fedsilo (`fedsilo.privacy.psi`, both sides in this process, group operations on
   `--workers` worker processes) against OpenMined's `openmined-psi` (C++ over BoringSSL,
   P-256, one thread; `DataStructure.RAW`, so both return the exact intersection),
   when it is installed (`pip install --no-deps openmined-psi`: it pins protobuf
   6.30.2, which Flower's gRPC health check refuses, so no extra of fedsilo installs
   it; it runs with the protobuf Flower needs). Baseline: openmined-psi in the same
   run. Both get their identifiers as Python lists made before the clock starts; the
   arms run `--repeats` times each (default 3), alternating, and their medians are
   compared.
   Wall time, and CPU time with fedsilo in one process (`Workers(1)`): the CPU
   ratio does not depend on what else the machine runs, the wall ratio does. Also the
   CPU of every process of the 2-worker run (this one and the workers), and from it the
   wall time it would take on idle cores (CPU / workers), and the per-pair CPU
   breakdown: hashing (canonical form + SHA-512, then onto the curve), checks of
   received elements, X25519 exponentiations, and the rest (overhead), so the floor
   of the method is visible.
2. 1M × 1M PSI with fedsilo: wall time, CPU of all processes, and peak resident memory
   of this process and of the largest worker (both sides' work counted: on a real pair
   of peers each side does half of it on its own cores).
3. Anonymous query: the holder publishes a 1M-entry table (timed), then 1,000 queries
   of one identifier each (half on the list), each one a full round trip: blind, the
   holder's quota check and evaluation, unblind, look-up, decrypt. Also 1,000
   identifiers in one request.
4. The two crypto suites (issue 22): PSI ``--suites`` × ``--suites`` (default 100k, half
   shared) under ``standard`` (X25519) and ``gm`` (the SM2 curve), both sides in one
   process, CPU time, the arms alternating ``--repeats`` times; printed: the median CPU
   per pair under each suite and gm / standard (baseline: the standard suite in the same
   run), and the gm suite's CPU per element of each step (hashing onto SM2, of which the
   two SSWU maps in Python; the SM2 scalar multiplication in Tongsuo; the check of a
   received point). The gm arm takes about 20 times the standard one: at 100k about
   5 CPU-minutes per repeat on this machine.

Identifiers are synthetic customer numbers; the 1M run and the query table read them
from generators during the run (never a list of a million strings). The CPU may be shared: run it on a quiet machine for stable figures.
This is a measurement, not a pass/fail test. Figures are printed last.

    python bench/psi.py                       # everything (about 10 min on 2 cores)
    python bench/psi.py --large 0 --table 0 --suites 0   # only the 100k comparison
    python bench/psi.py --size 0 --large 0 --table 0 --suites 5000 --repeats 2   # the suites, smaller
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsilo.privacy.psi import (
    ListHolder,
    MemoryQuota,
    Mode,
    PsiReceiver,
    PsiSender,
    Querier,
    Workers,
    canonical,
    exchange,
    sm2,
    x25519,
)
from fedsilo.privacy.psi.identifiers import PSI_DOMAIN, digests


def ids(start: int, stop: int):
    return (f"cust-{i:09d}" for i in range(start, stop))


def fedsilo_psi(n: int, workers: Workers, streamed: bool = False, suite: str = "standard") -> tuple[float, int]:
    """Both sides of one run; identifiers in lists made before the clock starts (as for
    openmined-psi), or with ``streamed`` from generators read during the run."""
    receiver_ids, sender_ids = ids(0, n), ids(n // 2, n + n // 2)
    if not streamed:
        receiver_ids, sender_ids = list(receiver_ids), list(sender_ids)
    t = time.perf_counter()
    receiver = PsiReceiver(receiver_ids, mode=Mode.TO_RECEIVER, workers=workers, suite=suite)
    sender = PsiSender(sender_ids, mode=Mode.TO_RECEIVER, workers=workers, suite=suite)
    exchange(receiver, sender)
    elapsed = time.perf_counter() - t
    return elapsed, receiver.result().cardinality


def cpu_seconds(run, *args) -> float:
    start = time.process_time()
    run(*args)
    return time.process_time() - start


def openmined_psi(n: int) -> tuple[float, int] | None:
    try:
        import private_set_intersection.python as psi
    except ImportError:
        return None
    client_items, server_items = list(ids(0, n)), list(ids(n // 2, n + n // 2))
    t = time.perf_counter()
    client = psi.client.CreateWithNewKey(True)
    server = psi.server.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(1e-9, len(client_items), server_items, psi.DataStructure.RAW)
    request = client.CreateRequest(client_items)
    response = server.ProcessRequest(request)
    found = client.GetIntersection(setup, response)
    return time.perf_counter() - t, len(found)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pool_cpu_seconds(workers: Workers) -> float:
    """CPU seconds (user + system) used so far by the pool's live processes."""
    total = 0
    for pid in workers.pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def timed_psi(n: int, workers: Workers, streamed: bool = False) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of this process and the pool together, shared count."""
    cpu = time.process_time() + pool_cpu_seconds(workers)
    wall, shared = fedsilo_psi(n, workers, streamed)
    return wall, time.process_time() + pool_cpu_seconds(workers) - cpu, shared


def breakdown_us(n: int = 20_000, repeats: int = 3) -> dict[str, float]:
    """CPU µs per element of each step, in this process on ``n`` elements: the lowest of ``repeats``."""
    values = [f"cust-{i:09d}" for i in range(n)]
    scalar = x25519.random_scalar()
    out: dict[str, float] = {}

    def step(name, fn, *args):
        start = time.process_time()
        result = fn(*args)
        out[name] = min(out.get(name, float("inf")), (time.process_time() - start) / n * 1e6)
        return result

    for _ in range(repeats):
        digest = step("digest", digests, values, "id", PSI_DOMAIN)
        points = step("onto", x25519.hash_onto_curve, digest)
        blinded = step("x25519", x25519.multiply, points, scalar)
        step("check", x25519.check_elements, blinded)
    return out


def gm_breakdown_us(n: int = 2_000, repeats: int = 3) -> dict[str, float]:
    """The gm suite's CPU µs per element of each step, in this process on ``n`` elements: the lowest of ``repeats``."""
    forms = [canonical(f"cust-{i:09d}", "id") for i in range(n)]
    scalar = sm2.random_scalar()
    out: dict[str, float] = {}

    def step(name, fn, *args):
        start = time.process_time()
        result = fn(*args)
        out[name] = min(out.get(name, float("inf")), (time.process_time() - start) / n * 1e6)
        return result

    def maps(values):
        return [sm2.map_to_curve(u) for v in values for u in sm2.hash_to_field(v, sm2.PSI_DST)]

    for _ in range(repeats):
        points = step("hash", sm2.hash_to_curve, forms, sm2.PSI_DST)
        step("maps", maps, forms)
        step("check", sm2.check_elements, points)
        step("multiply", sm2.multiply, points, scalar)  # includes its check
    return out


def compare_suites(args: argparse.Namespace, lines: list[str]) -> None:
    """PSI CPU per pair under the standard and the gm suite, in one process, arms alternating."""
    n = args.suites
    cpu: dict[str, list[float]] = {"standard": [], "gm": []}
    with Workers(1) as alone:
        for _ in range(args.repeats):
            for suite, runs in cpu.items():
                start = time.process_time()
                _, shared = fedsilo_psi(n, alone, suite=suite)
                runs.append(time.process_time() - start)
                assert shared == n - n // 2
                print(f"{suite} suite {n:,} x {n:,}: {runs[-1]:.1f} s CPU", flush=True)
    std, gm = statistics.median(cpu["standard"]), statistics.median(cpu["gm"])
    parts, x = gm_breakdown_us(min(n, 2_000)), breakdown_us(min(n, 2_000))
    lines.append(
        f"psi by suite {n:,}x{n:,} (both sides in one process, CPU, median of {args.repeats}): "
        f"standard {std / n * 1e6:.0f} us per pair, gm {gm / n * 1e6:.0f} us per pair: gm / standard {gm / std:.1f}x"
    )
    lines.append(
        f"gm CPU per element: hash onto SM2 {parts['hash']:.0f} us (of which the two SSWU maps with SM3 "
        f"hash_to_field, in Python: {parts['maps']:.0f} us), SM2 scalar multiplication with its check "
        f"{parts['multiply']:.0f} us (the check alone {parts['check']:.1f} us); standard: X25519 "
        f"{x['x25519']:.1f} us, hash onto Curve25519 {x['digest'] + x['onto']:.1f} us"
    )


def workers_peak_mib(workers: Workers) -> float:
    """Largest peak resident size (VmHWM) among the pool's live processes."""
    peaks = [0.0]
    for pid in workers.pids:
        with open(f"/proc/{pid}/status") as status:
            peaks += [int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:")]
    return max(peaks)


def query_bench(size: int, queries: int, workers: Workers) -> dict[str, float]:
    holder = ListHolder("risk-list", MemoryQuota(10 * queries), label_width=16, workers=workers)
    t = time.perf_counter()
    table = holder.publish((f"cust-{i:09d}", "high" if i % 3 else "1250000.00") for i in range(size))
    publish = time.perf_counter() - t
    querier = Querier(table.to_bytes())
    asked = [f"cust-{(i * 7919) % (2 * size):09d}" for i in range(queries)]  # about half on the list
    t = time.perf_counter()
    found = 0
    cpu = time.process_time()
    for ident in asked:
        pending = querier.ask([ident])
        found += pending.open(holder.answer("bank-a", pending.request))[0] is not None
    single = (time.perf_counter() - t) / queries
    single_cpu = (time.process_time() - cpu) / queries
    t = time.perf_counter()
    pending = querier.ask(asked)
    labels = pending.open(holder.answer("bank-a", pending.request))
    batch = (time.perf_counter() - t) / queries
    assert sum(label is not None for label in labels) == found
    return {
        "publish_s": publish,
        "per_query_ms": single * 1e3,
        "per_query_cpu_ms": single_cpu * 1e3,
        "per_id_in_batch_ms": batch * 1e3,
        "found": found,
        "table_mib": len(table.to_bytes()) / 2**20,
    }


def compare(args: argparse.Namespace, workers: Workers, lines: list[str]) -> None:
    """fedsilo against openmined-psi at ``args.size`` per side: wall and CPU time."""
    n = args.size
    feds, oms = [], []
    for _ in range(args.repeats):  # the two arms alternate, so both see the machine's drift
        feds.append(timed_psi(n, workers))
        print(
            f"fedsilo {n:,} x {n:,}: {feds[-1][0]:.1f} s, {feds[-1][1]:.1f} s CPU in all processes, "
            f"{feds[-1][2]:,} shared",
            flush=True,
        )
        start = time.process_time()
        found = openmined_psi(n)
        if found is None:
            break
        oms.append((found[0], time.process_time() - start, found[1]))
        print(f"openmined-psi {n:,} x {n:,}: {found[0]:.1f} s, {oms[-1][1]:.1f} s CPU, {found[1]:,} shared", flush=True)
    fed, fed_all_cpu, fed_n = (statistics.median(run[i] for run in feds) for i in range(3))
    with Workers(1) as alone:
        fed_cpu = cpu_seconds(fedsilo_psi, n, alone)
    print(f"fedsilo {n:,} x {n:,} in one process: {fed_cpu:.1f} s CPU", flush=True)
    om = (statistics.median(run[0] for run in oms), oms[0][2]) if oms else None
    om_cpu = statistics.median(run[1] for run in oms) if oms else 0.0
    parts = breakdown_us()
    pair = fed_cpu / n * 1e6
    hashing, checks, powers = 2 * (parts["digest"] + parts["onto"]), 2 * parts["check"], 4 * parts["x25519"]
    idle = fed_all_cpu / args.workers
    if om is None:
        lines.append(f"psi {n:,}x{n:,}: fedsilo {fed:.1f} s wall, {fed_cpu:.1f} s CPU (openmined-psi not installed)")
    else:
        assert om[1] == fed_n
        walls = " / ".join(f"{run[0]:.2f}" for run in feds), " / ".join(f"{run[0]:.1f}" for run in oms)
        lines.append(
            f"psi {n:,}x{n:,}: wall fedsilo ({args.workers} workers) {walls[0]} s, median {fed:.2f} s; "
            f"openmined-psi {walls[1]} s, median {om[0]:.1f} s; speed-up of the medians {om[0] / fed:.2f}x"
        )
        lines.append(
            f"psi {n:,}x{n:,}: CPU fedsilo in one process {fed_cpu:.1f} s, openmined-psi {om_cpu:.1f} s, "
            f"per-core ratio {om_cpu / fed_cpu:.2f}x; fedsilo's {args.workers}-worker run used "
            f"{fed_all_cpu:.1f} s of CPU in all processes: {idle:.1f} s on {args.workers} idle cores, "
            f"{om_cpu / idle:.2f}x openmined-psi's CPU (the wall speed-up on an idle machine, "
            "if the cores overlap perfectly)"
        )
    lines.append(
        f"psi CPU per pair (one process): {pair:.1f} us = hashing 2 x ({parts['digest']:.1f} canonical form "
        f"+ SHA-512, {parts['onto']:.1f} onto the curve) = {hashing:.1f} + checks of the received elements "
        f"exponentiated 2 x {parts['check']:.1f} = {checks:.1f} + X25519 4 x {parts['x25519']:.1f} "
        f"= {powers:.1f} "
        f"+ the rest {pair - hashing - checks - powers:.1f} (framing, duplicates, matching; the total "
        "minus the parts, each the fastest of 3 runs: near 0 it is within the noise of a shared machine)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000, help="each side's size for the comparison (0: skip)")
    parser.add_argument("--large", type=int, default=1_000_000, help="each side's size for the large run (0: skip)")
    parser.add_argument("--table", type=int, default=1_000_000, help="entries of the query table (0: skip)")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument(
        "--suites", type=int, default=100_000, help="each side's size for the standard-vs-gm comparison (0: skip)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each arm of the comparison, alternating; the medians are compared",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    print(f"cores: {os.cpu_count()}, workers: {args.workers}, load average: {load_start:.2f}", flush=True)
    lines = []
    with Workers(args.workers) as workers:
        workers.start()  # a daemon keeps its pool: its start is not timed
        if args.size:
            compare(args, workers, lines)
        if args.large:
            big, big_cpu, big_n = timed_psi(args.large, workers, streamed=True)
            print(f"fedsilo {args.large:,} x {args.large:,}: {big:.1f} s, {big_n:,} shared", flush=True)
            lines.append(
                f"psi {args.large:,}x{args.large:,}: fedsilo {big:.1f} s wall, {big_cpu:.1f} s CPU in all "
                f"processes ({big_cpu / args.workers:.1f} s on {args.workers} idle cores); peak RSS this "
                f"process {peak_mib():.0f} MiB, largest worker {workers_peak_mib(workers):.0f} MiB"
            )
        if args.table:
            q = query_bench(args.table, args.queries, workers)
            lines.append(
                f"query table {args.table:,} entries: published in {q['publish_s']:.1f} s "
                f"({q['table_mib']:.0f} MiB); {args.queries:,} queries of one identifier: "
                f"{q['per_query_ms']:.2f} ms each, {q['per_query_cpu_ms']:.2f} ms CPU ({q['found']:,} on the list); "
                f"in one request: "
                f"{q['per_id_in_batch_ms']:.2f} ms per identifier"
            )
    if args.suites:
        compare_suites(args, lines)
    lines.append(
        f"load average (1 min): {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
        f"({os.cpu_count()} cores)"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
