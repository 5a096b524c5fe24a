"""A daemon under attack: a 500-connection idle flood and 5,000 fuzzed requests on every route.

Issue 19's goal: under the flood and the fuzz at once, the daemon keeps answering
`/v1/health` within 1 s, returns no 5xx, and its audit chain verifies afterwards.

Sets up a one-machine consortium in a temporary directory (CA; bank-a, whose daemon
runs as a real `fedsilo peer start` process; bank-b, bank-c and the model owner
risk-dept; a `stranger` the CA signed but bank-a's manifest does not list), then:

1. baseline: bank-c asks for `/v1/health` 40 times on a quiet daemon;
2. the flood: `--flood` connections held open doing nothing, half of them plain TCP
   that never start the TLS handshake, half of them TLS connections that completed
   the handshake with bank-b's certificate and never send a request;
3. while the flood is held, `--requests` fuzzed requests spread over every route the
   daemon's own `/v1/openapi.json` lists (bodies that are malformed, nested thousands
   deep, oversized or binary; path parameters with traversal tricks and unknown ids;
   wrong methods), sent by bank-b, risk-dept and the stranger, 16 at a time;
4. all the while bank-c asks for `/v1/health` every 0.2 s and records the latency
   (a refused or failed probe counts as a miss);
5. afterwards: the daemon's descriptors and memory, then `fedsilo audit verify`.

The rate limits are lifted for the fuzzing members (`--default-limits` keeps the
peer.toml defaults, where most fuzzed requests meet 429 before their body is read),
so that the requests reach the handlers; the connection caps and timeouts stay at
their defaults, since those are what meets the flood.

    python bench/daemon_flood.py [--flood 500] [--requests 5000] [--default-limits]

Printed last: the slowest health answer under attack against the 1 s goal, the 5xx
count and whether the audit chain verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _daemon_common import ROOT, free_port, start_daemon
from yarl import URL

from fedsilo.peers.identity.consortium import admit, init_consortium, init_peer
from fedsilo.peers.identity.tls import client_context

PROBE_EVERY = 0.2
FUZZERS = ("bank-b", "risk-dept", "stranger")
BODIES = [
    b"",
    b"{",
    b"null",
    b"[]",
    b"{}",
    b"1e400",
    b"NaN",
    b"\xff\xfe\x00",
    b"[" * 50_000 + b"]" * 50_000,
    b'{"job": ' * 1000 + b"1" + b"}" * 1000,
    b"1" + b"0" * 5000,
    json.dumps({"job": {"job_id": ["x"], "run_config": 5}, "signature": 1, "certificate": []}).encode(),
    json.dumps({"spent": [{"noise_multiplier": 1.0, "sample_rate": 0.5, "steps": 10**17}], "epsilon": 99}).encode(),
    json.dumps({"fleet_address": ["127.0.0.1:1"], "since": -1, "job_id": "../../etc/passwd"}).encode(),
    b" " * (2 << 20),  # over the default 1 MiB body limit
]
PARAMETERS = ["bench-1", "nope", "..%2F..%2Fstate.sqlite", "%00", "a" * 300, "%2e%2e", "high-risk", "x%2Fy"]
QUERIES = ["", "?since=-1", "?since=abc", "?since=1e400", "?since=" + "9" * 30, "?limit=99999999999999999999"]

LIFTED = "read-rate = 100000.0\nread-burst = 100000\nwrite-rate = 100000.0\nwrite-burst = 100000\n"
LIFTED += "frames-rate = 100000.0\nframes-burst = 100000\n"


def setup(root: Path, default_limits: bool) -> tuple[str, Path]:
    """The consortium and bank-a's peer.toml (a data source, a shared list); returns (url, config path)."""
    init_consortium(root / "consortium", "bench")
    url = f"https://127.0.0.1:{free_port()}"
    members = (
        ("bank-a", ("peer",), url),
        ("bank-b", ("peer",), f"https://127.0.0.1:{free_port()}"),
        ("bank-c", ("peer",), f"https://127.0.0.1:{free_port()}"),
        ("risk-dept", ("model-owner",), None),
    )
    for name, roles, address in members:
        request = init_peer(root / name / "identity", name)
        admit(root / "consortium", request, roles, address, request.with_name("peer.pem"))
    for name, *_ in members:
        for file in ("ca.pem", "manifest.json"):
            shutil.copy(root / "consortium" / file, root / name / "identity" / file)
    # signed by the CA after bank-a's manifest was copied: a valid certificate of no member
    request = init_peer(root / "stranger" / "identity", "stranger")
    admit(root / "consortium", request, ("peer",), "https://127.0.0.1:1", request.with_name("peer.pem"))
    (root / "bank-a" / "data.csv").write_text("x,Y\n" + "".join(f"{i},{i % 2}\n" for i in range(200)))
    (root / "bank-a" / "high-risk.csv").write_text("client,grade\n" + "".join(f"C-{i},A\n" for i in range(50)))
    config = root / "bank-a" / "peer.toml"
    config.write_text(
        '[peer]\nidentity = "identity"\nstate = "state"\n[policy]\nmodel-owners = ["risk-dept"]\nmax-epsilon-per-job = 3.0\n'
        '[sources.credit-card]\npath = "data.csv"\nlabel = "Y"\nepsilon = 8.0\n'
        '[lists.high-risk]\npath = "high-risk.csv"\nid-column = "client"\nlabel-column = "grade"\n'
        'kind = "client"\npsi = ["bank-b"]\npsi-quota = 1000\nqueriers = { bank-b = 5 }\n'
        + ("" if default_limits else "[limits]\n" + LIFTED)
    )
    return url, config


def context(root: Path, name: str) -> ssl.SSLContext:
    identity = root / name / "identity"
    return client_context(root / "bank-a" / "identity" / "ca.pem", identity / "peer.pem", identity / "peer.key")


def fuzzed(routes: list[tuple[str, str]], count: int, rng: random.Random) -> list[tuple[str, str, str, bytes]]:
    """`count` requests (caller, method, path, body) spread evenly over the routes."""
    out = []
    for index in range(count):
        method, template = routes[index % len(routes)]
        if rng.random() < 0.1:  # the wrong method
            method = rng.choice(sorted({"GET", "POST", "DELETE", "PUT"} - {method}))
        path = template
        while "{" in path:
            start, end = path.index("{"), path.index("}")
            path = path[:start] + rng.choice(PARAMETERS) + path[end + 1 :]
        body = rng.choice(BODIES) if rng.random() < 0.9 else rng.randbytes(rng.randrange(1, 4096))
        out.append((rng.choice(FUZZERS), method, path + rng.choice(QUERIES), body))
    return out


async def probe(session: aiohttp.ClientSession, url: str) -> float:
    """Seconds one `/v1/health` took; infinity if it failed or was refused."""
    began = time.perf_counter()
    try:
        async with session.get(f"{url}/v1/health", timeout=aiohttp.ClientTimeout(total=10)) as reply:
            await reply.read()
            if reply.status != 200:
                return float("inf")
    except (TimeoutError, aiohttp.ClientError, OSError):
        return float("inf")
    return time.perf_counter() - began


async def hold_flood(host: str, port: int, count: int, tls: ssl.SSLContext) -> tuple[list, int]:
    """Open `count` connections: half bare TCP, half TLS after the handshake (bank-b). Returns (writers, failed)."""

    async def one(index: int):
        try:
            if index % 2:
                return (await asyncio.open_connection(host, port))[1]
            return (await asyncio.open_connection(host, port, ssl=tls, server_hostname=host))[1]
        except (OSError, ssl.SSLError):
            return None

    writers = []
    for start in range(0, count, 50):  # in waves, as a flood arrives
        writers.extend(await asyncio.gather(*(one(i) for i in range(start, min(start + 50, count)))))
    return [w for w in writers if w is not None], sum(w is None for w in writers)


def process_usage(pid: int) -> tuple[int, float]:
    """(open descriptors, resident MB) of a process, from /proc."""
    descriptors = len(os.listdir(f"/proc/{pid}/fd"))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return descriptors, int(line.split()[1]) / 1024
    return descriptors, float("nan")


async def attack(root: Path, url: str, pid: int, args: argparse.Namespace) -> dict:
    host, port = url.removeprefix("https://").split(":")
    prober = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context(root, "bank-c"), limit=1))
    sessions = {
        name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context(root, name), limit=8))
        for name in FUZZERS
    }
    try:
        quiet = [await probe(prober, url) for _ in range(40)]
        async with sessions["bank-b"].get(f"{url}/v1/openapi.json") as reply:
            spec = await reply.json()
        routes = sorted((method.upper(), path) for path, item in spec["paths"].items() for method in item)
        requests = fuzzed(routes, args.requests, random.Random(args.seed))
        usage_before = process_usage(pid)

        writers, failed = await hold_flood(host, int(port), args.flood, context(root, "bank-b"))
        usage_flooded = process_usage(pid)
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        server_errors: list[str] = []
        done = asyncio.Event()

        async def probing() -> None:
            while not done.is_set():
                latencies.append(await probe(prober, url))
                await asyncio.sleep(PROBE_EVERY)

        async def send(queue: list) -> None:
            while queue:
                caller, method, path, body = queue.pop()
                try:
                    async with sessions[caller].request(
                        method, URL(url + path, encoded=True), data=body, headers={"Content-Type": "application/json"}
                    ) as reply:
                        await reply.read()
                        status = reply.status
                except (TimeoutError, aiohttp.ClientError, OSError):
                    status = 0  # the daemon closed the connection (e.g. the stranger's, or a body too large)
                statuses[status] = statuses.get(status, 0) + 1
                if status >= 500:
                    server_errors.append(f"{status} {caller} {method} {path[:60]}")

        prober_task = asyncio.create_task(probing())
        began = time.perf_counter()
        queue = list(requests)
        await asyncio.gather(*(send(queue) for _ in range(16)))
        fuzz_seconds = time.perf_counter() - began
        usage_peak = process_usage(pid)
        done.set()
        await prober_task
        for writer in writers:
            writer.transport.abort()
        await asyncio.sleep(2)
        usage_after = process_usage(pid)
    finally:
        await prober.close()
        for session in sessions.values():
            await session.close()
    return {
        "routes": len(routes),
        "quiet": quiet,
        "latencies": latencies,
        "statuses": statuses,
        "server_errors": server_errors,
        "flood_open": len(writers),
        "flood_failed": failed,
        "fuzz_seconds": fuzz_seconds,
        "usage": {"before": usage_before, "flooded": usage_flooded, "peak": usage_peak, "after": usage_after},
    }


def summary(values: list[float]) -> str:
    finite = sorted(v for v in values if v != float("inf"))
    misses = len(values) - len(finite)
    if not finite:
        return f"no answer in {len(values)} probes"
    p99 = finite[min(len(finite) - 1, int(0.99 * len(finite)))]
    return (
        f"median {statistics.median(finite) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {finite[-1] * 1000:.0f} ms, {misses} missed of {len(values)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=500, help="idle connections held open (half TCP, half TLS)")
    parser.add_argument("--requests", type=int, default=5000, help="fuzzed requests over every route")
    parser.add_argument("--seed", type=int, default=19, help="the fuzz plan's seed (the inputs, not any secret)")
    parser.add_argument("--default-limits", action="store_true", help="keep peer.toml's default rate limits")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url, config = setup(root, args.default_limits)
        daemon = start_daemon(config, url)
        try:
            result = asyncio.run(attack(root, url, daemon.pid, args))
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)
        verify = subprocess.run(
            [sys.executable, "-m", "fedsilo.cli", "audit", "verify", "--config", str(config)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    usage = result["usage"]
    worst = max(result["latencies"], default=float("inf"))
    quiet = statistics.median(result["quiet"])
    print(f"load average before the run's end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"health, quiet daemon:        {summary(result['quiet'])}")
    print(
        f"flood: {result['flood_open']} connections opened ({result['flood_failed']} refused at once); the daemon "
        "closes each at its header timeout, or at once past a connection cap (descriptors below)"
    )
    print(
        f"fuzz: {args.requests} requests over {result['routes']} routes in {result['fuzz_seconds']:.1f} s; "
        f"statuses {dict(sorted(result['statuses'].items()))} (0: connection closed by the daemon)"
    )
    print(f"health, under flood + fuzz:  {summary(result['latencies'])}")
    for name, (descriptors, rss) in usage.items():
        print(f"daemon {name:>8}: {descriptors} descriptors, {rss:.0f} MB resident")
    for line in result["server_errors"][:5]:
        print(f"server error: {line}")
    print(f"audit verify: exit {verify.returncode}: {(verify.stdout + verify.stderr).strip()[:200]}")
    print(
        f"slowest health under attack {worst * 1000:.0f} ms (goal ≤ 1000 ms; "
        f"{worst / quiet:.1f}x the quiet median); 5xx: {len(result['server_errors'])}; "
        f"audit chain {'verifies' if verify.returncode == 0 else 'BROKEN'}"
    )


if __name__ == "__main__":
    main()
