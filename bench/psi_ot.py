"""OT-extension PSI (KKRT16, `fedsilo.privacy.psi.kkrt`) against fedsilo's DH-PSI: CPU, wall, bytes.

1. `--size` × `--size` (default 100k × 100k), half the identifiers shared: the OT-extension
   protocol (intersection to the receiver) against the DH protocol (the baseline,
   `fedsilo.privacy.psi.protocol` with `Workers(1)`), both sides in this one process, so the
   process's CPU time is the CPU of both parties; bytes on the wire per element (both directions,
   all frames, divided by one side's size). Then the OT protocol with each party in its own process
   (spawned; identifiers made before the clock), frames over a local socket pair, sent as
   `stream()` yields them (a writer thread per party, as a streaming HTTP body), result to both
   parties (`--mode`, as SecretFlow's `broadcast_result`): wall until both hold their result, each
   party's CPU and peak resident memory. The arms alternate `--repeats` times (default 3);
   medians are compared. Floors: plaintext joins of the same lists, CPU from the lists to the
   shared count: a Python `set` join on the strings, pandas' hash join (`DataFrame.merge`), and a
   set join on the canonical forms (what both protocols compare).
2. `--large` × `--large` (default 0: skipped; try 1,000,000 or 10,000,000): the two-process OT run
   alone, once, with the same floors (each party's peak RSS is its own process's).
3. With `--spu-python PATH` (an interpreter with `spu==0.9.5`, in its own venv: it needs
   numpy < 2), SecretFlow's PSI at the same `--size`, in the same alternation: `--spu-protocols`
   (default ECDH on Curve25519 and RR22), both parties as two processes over loopback
   (`bench/spu_psi_party.py`, brpc), the same identifiers (CSV files), the intersection checked
   exactly at both parties; each party's CPU (all its threads, and the `sort` it starts) and the
   wall of `psi_execute`, and the bytes both ways through a counting relay in this process
   (`bench/secretflow_psi.py`). Without `--spu-python` the arm is skipped with a line saying how to
   enable it; fedsilo never imports spu.

The machine may be shared: figures are provisional, ratios within one run only. A measurement, not a pass/fail test.

    python bench/psi_ot.py                         # 100k comparison (about a minute)
    python bench/psi_ot.py --size 0 --large 10000000   # 10M x 10M, the OT protocol in two processes
    python bench/psi_ot.py --spu-python /path/to/spuvenv/bin/python   # and SecretFlow's ECDH and RR22
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas
import secretflow_psi

from fedsilo.privacy.psi import KkrtReceiver, KkrtSender, Mode, PsiReceiver, PsiSender, Workers, canonical, exchange


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM): its own, unlike ru_maxrss, which Linux carries
    over from the parent at fork and keeps across exec (a spawned party would report the bench's size)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ids(start: int, stop: int):
    return (f"cust-{i:09d}" for i in range(start, stop))


def run(protocol: str, n: int, streamed: bool = False) -> dict[str, float]:
    """Both sides of one run: wall and CPU seconds, bytes on the wire, shared count."""
    receiver_ids, sender_ids = ids(0, n), ids(n // 2, n + n // 2)
    if not streamed:
        receiver_ids, sender_ids = list(receiver_ids), list(sender_ids)
    wire = [0]

    def tap(direction: str, frame: bytes) -> None:
        wire[0] += len(frame)

    cpu, wall = time.process_time(), time.perf_counter()
    if protocol == "ot":
        receiver, sender = KkrtReceiver(receiver_ids), KkrtSender(sender_ids)
        exchange(receiver, sender, tap)
    else:
        with Workers(1) as alone:
            receiver = PsiReceiver(receiver_ids, mode=Mode.TO_RECEIVER, workers=alone)
            sender = PsiSender(sender_ids, mode=Mode.TO_RECEIVER, workers=alone)
            exchange(receiver, sender, tap)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    shared = receiver.result().cardinality
    assert shared == n - n // 2, shared
    return {"wall": wall, "cpu": cpu, "bytes_per_element": wire[0] / max(n, 1), "shared": shared}


def _party(role: str, conn, n: int, mode: Mode, barrier, results) -> None:
    """One party of the two-process arm, in its own process: its identifiers made before the clock,
    then the run; frames go out as :meth:`stream` yields them (a writer thread sends them while this
    thread computes the next, as a streaming HTTP body would), so both parties work at once."""
    mine = list(ids(0, n)) if role == "receiver" else list(ids(n // 2, n + n // 2))
    outgoing: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
    sent = [0]

    def writer() -> None:
        while (frame := outgoing.get()) is not None:
            conn.send_bytes(frame)
            sent[0] += len(frame)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    barrier.wait()
    cpu, wall = time.process_time(), time.perf_counter()
    if role == "receiver":
        party = KkrtReceiver(mine, mode=mode)
        for frame in party.request_frames():
            outgoing.put(frame)
    else:
        party = KkrtSender(mine, mode=mode)
        party.prepare()  # hash its own set while the receiver hashes its own
    while not party.done:
        for frame in party.stream(conn.recv_bytes()):
            outgoing.put(frame)
    outgoing.put(None)
    thread.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = party.result()
    results.put(
        {
            "role": role,
            "cpu": cpu,
            "wall": wall,
            "sent": sent[0],
            "shared": result.cardinality,
            "peak_mib": peak_mib(),
        }
    )


def two_processes(n: int, mode: Mode = Mode.TO_BOTH) -> dict[str, float]:
    """The OT protocol with each party in its own process, frames over a local socket pair, streamed:
    each party's CPU seconds and peak resident memory (its own process), the wall seconds until both
    hold their result, bytes per element both ways."""
    ctx = multiprocessing.get_context("spawn")
    receiver_end, sender_end = ctx.Pipe()
    barrier, results = ctx.Barrier(2), ctx.Queue()
    parties = [
        ctx.Process(target=_party, args=(role, end, n, mode, barrier, results), daemon=True)
        for role, end in (("receiver", receiver_end), ("sender", sender_end))
    ]
    for party in parties:
        party.start()
    got = {r["role"]: r for r in (results.get(), results.get())}
    for party in parties:
        party.join()
    receiver, sender = got["receiver"], got["sender"]
    assert receiver["shared"] == n - n // 2 and sender["shared"] in (None, n - n // 2), (receiver, sender)
    return {
        "wall": max(receiver["wall"], sender["wall"]),
        "receiver_cpu": receiver["cpu"],
        "sender_cpu": sender["cpu"],
        "cpu": receiver["cpu"] + sender["cpu"],
        "receiver_peak_mib": receiver["peak_mib"],
        "sender_peak_mib": sender["peak_mib"],
        "bytes_per_element": (receiver["sent"] + sender["sent"]) / max(n, 1),
    }


def hash_join(n: int) -> dict[str, float]:
    """Plaintext joins of the same sets, each timed from the identifier lists to the shared count (CPU s):
    a Python set join on the strings, pandas' hash join (`DataFrame.merge`) of the same lists, and a
    set join on the canonical forms (what both PSI protocols compare)."""
    xs, ys = list(ids(0, n)), list(ids(n // 2, n + n // 2))
    times = {}
    start = time.process_time()
    assert len(set(xs) & set(ys)) == n - n // 2
    times["set"] = time.process_time() - start
    start = time.process_time()
    joined = pandas.DataFrame({"id": xs}).merge(pandas.DataFrame({"id": ys}), on="id", how="inner")
    assert len(joined) == n - n // 2
    times["pandas"] = time.process_time() - start
    start = time.process_time()
    assert len({canonical(x, "id") for x in xs} & {canonical(y, "id") for y in ys}) == n - n // 2
    times["canonical"] = time.process_time() - start
    return times


def apart_line(n: int, runs: list[dict[str, float]], joins: dict[str, float], mode: Mode) -> str:
    return (
        f"psi {n:,}x{n:,} OT-extension (KKRT16), each party in its own process, frames streamed over a local "
        f"socket pair, result to {'both' if mode is Mode.TO_BOTH else 'the receiver'} (medians of {len(runs)}): "
        f"{median(runs, 'wall'):.2f} s wall, receiver {median(runs, 'receiver_cpu'):.2f} + sender "
        f"{median(runs, 'sender_cpu'):.2f} = {median(runs, 'cpu'):.2f} CPU-s, "
        f"{runs[0]['bytes_per_element']:.0f} bytes/element, peak RSS receiver {max(r['receiver_peak_mib'] for r in runs):.0f} "
        f"MiB, sender {max(r['sender_peak_mib'] for r in runs):.0f} MiB; plaintext joins: set {joins['set']:.2f} s, "
        f"pandas merge {joins['pandas']:.2f} s, canonical forms {joins['canonical']:.2f} s; PSI wall / pandas join "
        f"{median(runs, 'wall') / joins['pandas']:.1f}x, PSI CPU / pandas join {median(runs, 'cpu') / joins['pandas']:.1f}x, "
        f"/ canonical join {median(runs, 'cpu') / joins['canonical']:.1f}x"
    )


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000, help="each side's size for the comparison (0: skip)")
    parser.add_argument("--large", type=int, default=0, help="each side's size for the OT-only run (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each arm, alternating; medians compared")
    parser.add_argument(
        "--mode",
        choices=["both", "receiver"],
        default="both",
        help="the two-process arms' result: to both (as SecretFlow's)",
    )
    parser.add_argument("--no-dh", action="store_true", help="skip fedsilo's DH arm at --size (slow at 1M)")
    parser.add_argument(
        "--spu-python", metavar="PATH", help="an interpreter with spu==0.9.5: adds SecretFlow's PSI at --size"
    )
    parser.add_argument(
        "--spu-protocols", default="ecdh,rr22", help="SecretFlow protocols to run, comma-separated (ecdh, rr22)"
    )
    args = parser.parse_args()
    mode = Mode.TO_BOTH if args.mode == "both" else Mode.TO_RECEIVER
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}", flush=True)
    lines = []
    why_not = secretflow_psi.unavailable(args.spu_python)
    spu_protocols = [] if why_not else [p.strip() for p in args.spu_protocols.split(",") if p.strip()]
    if why_not:
        lines.append(f"SecretFlow arm skipped: {why_not}")
    else:
        print(f"SecretFlow: spu {secretflow_psi.version(args.spu_python)} under {args.spu_python}", flush=True)
    if args.size:
        n, ots, dhs = args.size, [], []
        sfs: dict[str, list[dict[str, float]]] = {p: [] for p in spu_protocols}
        files = Path(tempfile.mkdtemp(prefix="psi-ot-bench-"))
        if spu_protocols:
            secretflow_psi.write_ids(files / "receiver.csv", ids(0, n))
            secretflow_psi.write_ids(files / "sender.csv", ids(n // 2, n + n // 2))
            shared = set(ids(n // 2, n))
        apart: list[dict[str, float]] = []
        for repeat in range(args.repeats):
            apart.append(two_processes(n, mode))
            r = apart[-1]
            print(
                f"ot in two processes: {r['wall']:.2f} s wall, receiver {r['receiver_cpu']:.2f} + sender "
                f"{r['sender_cpu']:.2f} CPU-s, {r['bytes_per_element']:.0f} bytes/element, peak RSS "
                f"{r['receiver_peak_mib']:.0f} + {r['sender_peak_mib']:.0f} MiB",
                flush=True,
            )
            for name, runs in (("ot", ots), ("dh", dhs))[: 1 if args.no_dh else 2]:
                runs.append(run(name, n))
                r = runs[-1]
                print(f"{name} {n:,} x {n:,}: {r['wall']:.2f} s wall, {r['cpu']:.2f} CPU-s", flush=True)
            for name, runs in sfs.items():
                job = f"bench-{name}-{os.getpid()}-{repeat}"
                r = secretflow_psi.run(args.spu_python, name, files / "receiver.csv", files / "sender.csv", shared, job)
                r["bytes_per_element"] = r["bytes"] / n
                runs.append(r)
                print(
                    f"SecretFlow {name} {n:,} x {n:,}: {r['wall']:.2f} s wall, receiver {r['receiver_cpu']:.2f} + "
                    f"sender {r['sender_cpu']:.2f} CPU-s, {r['bytes_per_element']:.0f} bytes/element",
                    flush=True,
                )
        joins = hash_join(n)
        ot_cpu = median(ots, "cpu")
        dh_cpu = median(dhs, "cpu") if dhs else float("nan")
        lines.append(
            f"psi {n:,}x{n:,} (both parties, one process, medians of {args.repeats}): "
            f"OT-extension (KKRT16) {median(ots, 'wall'):.2f} s wall, {ot_cpu:.2f} CPU-s; "
            + (
                f"DH (X25519) {median(dhs, 'wall'):.2f} s wall, {dh_cpu:.2f} CPU-s; CPU ratio DH/OT {dh_cpu / ot_cpu:.1f}x"
                if dhs
                else "DH not run (--no-dh)"
            )
        )
        lines.append(apart_line(n, apart, joins, mode))
        lines.append(
            f"psi {n:,}x{n:,} bytes on the wire per element (both directions): OT {ots[0]['bytes_per_element']:.0f}, "
            + (f"DH {dhs[0]['bytes_per_element']:.0f}" if dhs else "DH not run")
        )
        for name, runs in sfs.items():
            sf_cpu = median(runs, "cpu")
            lines.append(
                f"psi {n:,}x{n:,} SecretFlow {name.upper()} (spu, two processes over loopback, medians of "
                f"{args.repeats}): receiver {median(runs, 'receiver_cpu'):.2f} + sender "
                f"{median(runs, 'sender_cpu'):.2f} = {sf_cpu:.2f} CPU-s, {median(runs, 'wall'):.2f} s wall, "
                f"{runs[0]['bytes_per_element']:.0f} bytes/element, peak RSS receiver {runs[0]['peak_mib'][0]:.0f} MiB, "
                f"sender {runs[0]['peak_mib'][1]:.0f} MiB; its CPU / fedsilo OT's (one process) {sf_cpu / ot_cpu:.2f}x, "
                f"its wall / fedsilo OT's (two processes) {median(runs, 'wall') / median(apart, 'wall'):.2f}x"
                + (f", / fedsilo DH's {sf_cpu / dh_cpu:.2f}x" if dhs else "")
            )
        for leftover in files.iterdir():
            leftover.unlink()
        files.rmdir()
    if args.large:
        n = args.large
        big = two_processes(n, mode)
        lines.append(apart_line(n, [big], hash_join(n), mode))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
