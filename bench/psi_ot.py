"""OT-extension PSI (KKRT16, `fedsilo.privacy.psi.kkrt`) against fedsilo's DH-PSI: CPU, wall, bytes.

1. `--size` × `--size` (default 100k × 100k), intersection to the receiver, half the
   identifiers shared: the OT-extension protocol against the DH protocol (the baseline,
   `fedsilo.privacy.psi.protocol` with `Workers(1)`), both sides in this one process, so
   the process's CPU time is the CPU of both parties. The arms alternate `--repeats`
   times (default 3); medians are compared. Also the bytes on the wire per element (both
   directions, all frames, divided by one side's size) and a plaintext hash join of the same
   sets (`set & set` on the strings, and on their canonical forms) as the floor. Then the OT
   protocol with the sender in a second process (frames over a local socket pair, as two
   peers on one host): each party's CPU and the wall time.
2. `--large` × `--large` (default 0: skipped; try 1,000,000): the OT-extension protocol alone,
   identifiers read from generators during the run; wall, CPU and this process's peak
   resident memory (both sides' data, one process), against the plaintext hash join.
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
    python bench/psi_ot.py --large 1000000         # and 1M x 1M with the OT protocol
    python bench/psi_ot.py --spu-python /path/to/spuvenv/bin/python   # and SecretFlow's ECDH and RR22
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import multiprocessing.connection
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import secretflow_psi

from fedsilo.privacy.psi import KkrtReceiver, KkrtSender, Mode, PsiReceiver, PsiSender, Workers, canonical, exchange


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


def _sender_process(conn: multiprocessing.connection.Connection, n: int) -> None:
    """The sender, in its own process: answers each frame with the list of its replies."""
    sender_ids = list(ids(n // 2, n + n // 2))
    conn.send_bytes(b"ready")
    start = time.process_time()
    sender = KkrtSender(sender_ids)
    while frame := conn.recv_bytes():
        conn.send(sender.handle(frame))
    conn.send(time.process_time() - start)


def two_processes(n: int) -> dict[str, float]:
    """The OT protocol with the sender in a second process, frames over a local socket pair:
    each party's CPU seconds (identifier lists made before the clock starts), wall seconds."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_sender_process, args=(theirs, n), daemon=True)
    child.start()
    receiver_ids = list(ids(0, n))
    assert ours.recv_bytes() == b"ready"
    cpu, wall = time.process_time(), time.perf_counter()
    receiver = KkrtReceiver(receiver_ids)
    pending = collections.deque(receiver.request_frames())
    while pending:
        ours.send_bytes(pending.popleft())
        for reply in ours.recv():
            pending.extend(receiver.handle(reply))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ours.send_bytes(b"")
    sender_cpu = ours.recv()
    child.join()
    assert receiver.result().cardinality == n - n // 2
    return {"wall": wall, "receiver_cpu": cpu, "sender_cpu": sender_cpu}


def hash_join(n: int) -> tuple[float, float]:
    """Seconds of a plaintext hash join of the same sets: on the strings, and on canonical forms."""
    xs, ys = list(ids(0, n)), list(ids(n // 2, n + n // 2))
    start = time.process_time()
    assert len(set(xs) & set(ys)) == n - n // 2
    raw = time.process_time() - start
    start = time.process_time()
    assert len({canonical(x, "id") for x in xs} & {canonical(y, "id") for y in ys}) == n - n // 2
    return raw, time.process_time() - start


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000, help="each side's size for the comparison (0: skip)")
    parser.add_argument("--large", type=int, default=0, help="each side's size for the OT-only run (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each arm, alternating; medians compared")
    parser.add_argument("--no-dh", action="store_true", help="skip fedsilo's DH arm at --size (slow at 1M)")
    parser.add_argument(
        "--spu-python", metavar="PATH", help="an interpreter with spu==0.9.5: adds SecretFlow's PSI at --size"
    )
    parser.add_argument(
        "--spu-protocols", default="ecdh,rr22", help="SecretFlow protocols to run, comma-separated (ecdh, rr22)"
    )
    args = parser.parse_args()
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
        for repeat in range(args.repeats):
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
        apart = [two_processes(n) for _ in range(args.repeats)]
        for r in apart:
            print(
                f"ot in two processes: {r['wall']:.2f} s wall, receiver {r['receiver_cpu']:.2f} CPU-s, "
                f"sender {r['sender_cpu']:.2f} CPU-s",
                flush=True,
            )
        raw, canon = hash_join(n)
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
        lines.append(
            f"psi {n:,}x{n:,} OT-extension in two processes (sender in its own, a local socket pair; medians): "
            f"receiver {median(apart, 'receiver_cpu'):.2f} CPU-s + sender {median(apart, 'sender_cpu'):.2f} CPU-s, "
            f"{median(apart, 'wall'):.2f} s wall"
        )
        lines.append(
            f"psi {n:,}x{n:,} bytes on the wire per element (both directions): OT {ots[0]['bytes_per_element']:.0f}, "
            + (f"DH {dhs[0]['bytes_per_element']:.0f}" if dhs else "DH not run")
        )
        lines.append(
            f"psi {n:,}x{n:,} plaintext hash join: {raw:.3f} s on the strings, {canon:.3f} s on canonical forms; "
            f"OT-extension PSI CPU / join on canonical forms = {ot_cpu / canon:.1f}x"
        )
        for name, runs in sfs.items():
            sf_cpu = median(runs, "cpu")
            lines.append(
                f"psi {n:,}x{n:,} SecretFlow {name.upper()} (spu, two processes over loopback, medians of "
                f"{args.repeats}): receiver {median(runs, 'receiver_cpu'):.2f} + sender "
                f"{median(runs, 'sender_cpu'):.2f} = {sf_cpu:.2f} CPU-s, {median(runs, 'wall'):.2f} s wall, "
                f"{runs[0]['bytes_per_element']:.0f} bytes/element; its CPU / fedsilo OT's {sf_cpu / ot_cpu:.2f}x"
                + (f", / fedsilo DH's {sf_cpu / dh_cpu:.2f}x" if dhs else "")
            )
        for leftover in files.iterdir():
            leftover.unlink()
        files.rmdir()
    if args.large:
        n = args.large
        big = run("ot", n, streamed=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        raw, canon = hash_join(n)
        lines.append(
            f"psi {n:,}x{n:,} OT-extension: {big['wall']:.1f} s wall, {big['cpu']:.1f} CPU-s (both parties), "
            f"{big['bytes_per_element']:.0f} bytes/element, peak RSS {peak:.0f} MiB (this process, both sides); "
            f"plaintext join {raw:.2f} s (strings), {canon:.2f} s (canonical): CPU / canonical join "
            f"{big['cpu'] / canon:.1f}x"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
