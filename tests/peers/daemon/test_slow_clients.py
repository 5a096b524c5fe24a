"""Slow clients are closed on time and cannot starve the daemon; connections are capped per member.

A real daemon process (`fedsilo peer start`) on 127.0.0.1; the clients are real TLS
sockets with a member's certificate that trickle their headers or body a byte at a
time. Each must be closed within [limits] header-timeout / body-timeout (plus the
scheduling slack of a loaded CI machine), while another member's /v1/health keeps
being answered within 1 s and the daemon's descriptors come back down afterwards.
"""

import asyncio
import json
import os
import subprocess
import sys
import time

import aiohttp
import pytest

from fedsilo.peers.identity.consortium import admit, init_peer
from fedsilo.peers.identity.tls import client_context

from ._consortium import make_consortium, run, running
from .test_consortium_e2e import start, stop

HEADER_TIMEOUT = 8.0
BODY_TIMEOUT = 4.0
SLACK = 2.5  # seconds of scheduling delay allowed on a shared, loaded machine
FLOOD = 300


def _limits(consortium, name, per_member=1000, unidentified=16):
    with open(consortium.config_path(name), "a") as handle:
        handle.write(
            f"\n[limits]\nheader-timeout = {HEADER_TIMEOUT}\nbody-timeout = {BODY_TIMEOUT}\n"
            f"connections-per-member = {per_member}\nunidentified-connections = {unidentified}\n"
            "read-rate = 1000.0\nread-burst = 1000\n"
        )


def _context(consortium, name):
    identity = consortium.identity(name)
    return client_context(identity.ca_path, identity.cert_path, identity.key_path)


def _address(consortium, name):
    host, port = consortium.addresses[name].removeprefix("https://").split(":")
    return host, int(port)


async def trickle(address, context, head: bytes, pace: float = 0.25) -> tuple[float, float] | None:
    """Open a TLS connection, send `head`, then one byte every `pace` s until the peer closes it.

    Returns (seconds from the handshake to the close, seconds the handshake took), or None
    if the handshake failed."""
    began = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(*address, ssl=context, server_hostname=address[0])
    except (ConnectionError, OSError):
        return None
    opened = time.monotonic()
    writer.write(head)

    async def drip():
        while True:
            await asyncio.sleep(pace)
            writer.write(b"a")
            await writer.drain()

    dripping = asyncio.create_task(drip())
    try:
        while await reader.read(4096):
            pass
    except (ConnectionError, OSError):
        pass
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
        writer.transport.abort()
    return time.monotonic() - opened, opened - began


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    consortium = make_consortium(tmp_path_factory.mktemp("slow"), peers=("bank-a", "bank-b", "bank-c"))
    _limits(consortium, "bank-a")
    process = start(consortium, "bank-a")
    try:
        yield consortium, process
    finally:
        stop(process)


@pytest.mark.parametrize(
    "head, deadline",
    [
        (b"GET /v1/health HTTP/1.1\r\nHost: bank-a\r\nX-Slow: ", HEADER_TIMEOUT),
        (b"POST /v1/proposals HTTP/1.1\r\nHost: bank-a\r\nContent-Length: 100000\r\n\r\n{", BODY_TIMEOUT),
        (b"", HEADER_TIMEOUT),  # says nothing at all after the handshake
    ],
    ids=["headers", "body", "silent"],
)
def test_a_trickling_client_is_closed_within_its_timeout(daemon, head, deadline):
    consortium, _ = daemon
    pace = 0.25 if head else 3600.0
    outcome = trickle(_address(consortium, "bank-a"), _context(consortium, "bank-b"), head, pace)
    closed_after, _ = run(asyncio.wait_for(outcome, deadline + 10))  # never closed: TimeoutError
    assert deadline - 0.1 <= closed_after <= deadline + SLACK


FLOODER = """
import asyncio, json, ssl, sys, time

host, port, ca, cert, key, count = sys.argv[1:7]
head = b"GET /v1/health HTTP/1.1\\r\\nHost: bank-a\\r\\nX-Slow: "
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False
context.load_cert_chain(cert, key)

async def trickle():  # as `trickle` in the test module, without importing it (a light process)
    try:
        reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    except OSError:
        return None
    opened = time.monotonic()
    writer.write(head)

    async def drip():
        while True:
            await asyncio.sleep(1.0)  # a byte a second: slow enough to hold, as slowloris does
            writer.write(b"a")
            await writer.drain()

    dripping = asyncio.create_task(drip())
    try:
        while await reader.read(4096):
            pass
    except OSError:
        pass
    dripping.cancel()
    await asyncio.gather(dripping, return_exceptions=True)
    writer.transport.abort()
    return time.monotonic() - opened

async def main():
    tasks = []
    for index in range(int(count)):  # 5 new connections every 0.2 s, as a flood ramps up
        tasks.append(asyncio.create_task(trickle()))
        if index % 5 == 4:
            await asyncio.sleep(0.2)
    print(json.dumps([await task for task in tasks]))

asyncio.run(main())
"""


@pytest.mark.slow
def test_a_flood_of_trickling_connections_is_closed_and_health_stays_prompt(daemon):
    """FLOOD connections of bank-b trickle their headers from another process; bank-c's health
    requests, from this one, are timed meanwhile."""
    consortium, process = daemon
    host, port = _address(consortium, "bank-a")
    identity = consortium.identity("bank-b")
    baseline = _descriptors(process.pid)
    flooder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            FLOODER,
            host,
            str(port),
            *map(str, (identity.ca_path, identity.cert_path)),
            str(identity.key_path),
            str(FLOOD),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )

    async def probe():
        latencies, peak = [], 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_context(consortium, "bank-c"))) as session:
            while flooder.poll() is None:
                began = time.monotonic()
                async with session.get(f"{consortium.addresses['bank-a']}/v1/health") as reply:
                    assert reply.status == 200 and (await reply.json())["peer"] == "bank-a"
                latencies.append(time.monotonic() - began)
                peak = max(peak, _descriptors(process.pid))
                await asyncio.sleep(0.2)
        return latencies, peak

    cpu, rss = _cpu_seconds(process.pid), _rss_mb(process.pid)
    latencies, peak = run(probe())
    cpu, rss = _cpu_seconds(process.pid) - cpu, (rss, _rss_mb(process.pid))
    outcomes = json.loads(flooder.communicate(timeout=60)[0])
    closes = [outcome for outcome in outcomes if outcome is not None]
    print(
        f"flood: {len(closes)} of {FLOOD} handshakes, descriptors {baseline} -> peak {peak}, health "
        f"max {max(latencies):.3f} s, daemon CPU {cpu:.2f} s, RSS {rss[0]:.0f} -> {rss[1]:.0f} MB, closed after {min(closes):.2f}-{max(closes):.2f} s"
    )
    assert len(closes) >= FLOOD * 0.9, "most of the flood's handshakes failed: it tested nothing"
    assert peak >= baseline + 100, f"the flood never held many connections open at once (peak {peak})"
    assert len(latencies) >= 5
    assert max(latencies) < 1.0, f"health took up to {max(latencies):.2f} s during the flood"
    assert max(closes) <= HEADER_TIMEOUT + SLACK
    deadline = time.monotonic() + 5
    while _descriptors(process.pid) > baseline + 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _descriptors(process.pid) <= baseline + 5, "the daemon kept descriptors of closed connections"


def test_connections_over_a_members_cap_are_closed_at_once_and_others_still_served(tmp_path):
    consortium = make_consortium(tmp_path, peers=("bank-a", "bank-b", "bank-c"))
    _limits(consortium, "bank-a", per_member=4)
    address = _address(consortium, "bank-a")

    async def body():
        async with running(consortium, ["bank-a"]):
            flooder = _context(consortium, "bank-b")
            held = [await asyncio.open_connection(*address, ssl=flooder, server_hostname=address[0]) for _ in range(4)]
            extra = await asyncio.open_connection(*address, ssl=flooder, server_hostname=address[0])
            began = time.monotonic()
            try:
                closed = await asyncio.wait_for(extra[0].read(1), timeout=HEADER_TIMEOUT)
            except (ConnectionError, OSError):
                closed = b""
            refused_after = time.monotonic() - began
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_context(consortium, "bank-c"))) as s:
                async with s.get(f"{consortium.addresses['bank-a']}/v1/health") as reply:
                    other = reply.status
            held[0][1].write(b"GET /v1/health HTTP/1.1\r\nHost: bank-a\r\n\r\n")
            first_line = await held[0][0].readline()
            for _, writer in [*held, extra]:
                writer.transport.abort()
            return closed, refused_after, other, first_line

    closed, refused_after, other, first_line = run(body())
    assert closed == b"" and refused_after < 0.5  # the fifth of bank-b's connections: closed before any byte
    assert other == 200  # bank-c has its own allowance
    assert first_line.startswith(b"HTTP/1.1 200")  # bank-b's four open connections are served


def test_connections_with_no_members_certificate_are_capped_apart_from_members(tmp_path):
    """A certificate the CA signed that is not in bank-a's manifest: two connections stay (each
    request is refused 403 there), the third is closed at once; members are still served."""
    consortium = make_consortium(tmp_path, peers=("bank-a", "bank-b"))
    _limits(consortium, "bank-a", unidentified=2)
    request = init_peer(tmp_path / "late", "late-peer")
    admit(consortium.root / "consortium", request, ("peer",), "https://127.0.0.1:1", tmp_path / "late" / "peer.pem")
    stranger = client_context(
        consortium.identity_dir("bank-a") / "ca.pem", tmp_path / "late" / "peer.pem", tmp_path / "late" / "peer.key"
    )
    address = _address(consortium, "bank-a")

    async def body():
        async with running(consortium, ["bank-a"]):
            held = [await asyncio.open_connection(*address, ssl=stranger, server_hostname=address[0]) for _ in range(2)]
            extra = await asyncio.open_connection(*address, ssl=stranger, server_hostname=address[0])
            try:
                closed = await asyncio.wait_for(extra[0].read(1), timeout=HEADER_TIMEOUT)
            except (ConnectionError, OSError):
                closed = b""
            held[0][1].write(b"GET /v1/health HTTP/1.1\r\nHost: bank-a\r\n\r\n")
            refused = await held[0][0].readline()
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_context(consortium, "bank-b"))) as s:
                async with s.get(f"{consortium.addresses['bank-a']}/v1/health") as reply:
                    member = reply.status
            for _, writer in [*held, extra]:
                writer.transport.abort()
            return closed, refused, member

    closed, refused, member = run(body())
    assert closed == b""
    assert refused.startswith(b"HTTP/1.1 403")
    assert member == 200
