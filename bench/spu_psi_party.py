"""One party of SecretFlow's PSI (`spu` 0.9.5, `spu.psi.psi_execute`), for `bench/psi_ot.py`'s anchor arm.

Runs under a SEPARATE interpreter that has `spu==0.9.5` installed (it needs numpy < 2, so it
cannot share fedsilo's venv); it imports only spu and the standard library, never fedsilo.
Both parties run this script, each in its own process, linked by brpc over loopback:

    python bench/spu_psi_party.py --rank 0 --protocol rr22 --ids a.csv --out a_out.csv \\
        --listen 127.0.0.1:40001 --peer 127.0.0.1:40002 --job j1

`--ids` is a CSV file with the header `id` and one identifier a line; rank 0 is the receiver,
the intersection goes to both (`broadcast_result`), written to `--out` (header `id`).
`--listen` is this party's own address; `--peer` is where it reaches the other party (the
bench may put a byte-counting relay there). One line on stdout, `RESULT ` and a JSON object: the process CPU seconds
(all threads, and the `sort` children spu starts) and wall seconds of `psi_execute` alone (after `import spu` and the link set-up),
the counts of spu's report.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import spu.libspu.link as link
import spu.psi as psi

PROTOCOLS = {"ecdh": psi.PsiProtocol.PROTOCOL_ECDH, "rr22": psi.PsiProtocol.PROTOCOL_RR22}


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM): its own, unlike ru_maxrss, which Linux carries
    over from the parent at fork and keeps across exec (a spawned party would report the bench's size)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its reaped children (spu sorts with `sort`)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank", type=int, choices=(0, 1), required=True)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    parser.add_argument("--ids", required=True, help="CSV input, header `id`")
    parser.add_argument("--out", required=True, help="CSV output: the intersection")
    parser.add_argument("--listen", required=True, help="host:port this party listens on")
    parser.add_argument("--peer", required=True, help="host:port where this party reaches the other")
    parser.add_argument("--job", required=True, help="a link id shared by both parties of one run")
    args = parser.parse_args()

    desc = link.Desc()
    desc.id = args.job
    desc.recv_timeout_ms = 600_000
    desc.connect_retry_times = 120
    desc.connect_retry_interval_ms = 500
    addresses = [args.listen, args.peer] if args.rank == 0 else [args.peer, args.listen]
    for rank, address in enumerate(addresses):
        desc.add_party(f"party{rank}", address)
    context = link.create_brpc(desc, args.rank)

    config = psi.PsiExecuteConfig(
        protocol_conf=psi.PsiProtocolConfig(
            protocol=PROTOCOLS[args.protocol],
            receiver_rank=0,
            broadcast_result=True,
            ecdh_params=psi.EcdhParams(curve=psi.EllipticCurveType.CURVE_25519),
            rr22_params=psi.Rr22Rarams(low_comm_mode=False),
        ),
        input_params=psi.InputParams(
            type=psi.SourceType.SOURCE_TYPE_FILE_CSV, path=args.ids, selected_keys=["id"], keys_unique=True
        ),
        output_params=psi.OutputParams(type=psi.SourceType.SOURCE_TYPE_FILE_CSV, path=args.out, disable_alignment=True),
    )
    cpu, wall = _cpu(), time.perf_counter()
    report = psi.psi_execute(config, context)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    context.stop_link()
    print(
        "RESULT "
        + json.dumps(
            {
                "rank": args.rank,
                "cpu": cpu,
                "wall": wall,
                "peak_mib": peak_mib(),
                "original_count": report.original_count,
                "intersection_count": report.intersection_count,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
