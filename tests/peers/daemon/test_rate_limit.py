"""Rate limits per member and per route: over its bucket a member gets 429 with Retry-After,
nothing is stored (jobs, ledger, audit log), and the other members are unaffected.

Real daemons in-process on 127.0.0.1 over mutual TLS; the callers use raw aiohttp
sessions with their own certificates, so the status and headers are seen as sent.
"""

import json
import re

import aiohttp
import pytest

from fedsilo.errors import ConfigError
from fedsilo.peers.daemon.config import Limits, load_config
from fedsilo.peers.daemon.rate_limit import RateLimiter, TokenBucket
from fedsilo.peers.identity.tls import client_context

from ._consortium import make_consortium, run, running, signed
from .test_daemon_refusals import state_of

LIMITS = '\n[limits]\nroutes = { "POST /v1/proposals" = [0.01, 2] }\nread-burst = 5\nread-rate = 0.01\n'


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_says_how_long_to_wait_and_refills():
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.25
    assert bucket.take() == pytest.approx(0.25)  # half a token back, none taken
    clock.now += 0.25
    assert bucket.take() == 0.0
    clock.now += 100.0  # refills up to the burst, never beyond
    assert [bucket.take() for _ in range(4)][-1] == pytest.approx(0.5)


def test_buckets_are_per_member_and_per_route_with_the_routes_own_rate():
    clock = Clock()
    limits = Limits(write_rate=1.0, write_burst=1, read_rate=1.0, read_burst=2, routes=(("POST /v1/jobs", 0.1, 1),))
    limiter = RateLimiter(limits, clock)
    assert limiter.check("bank-a", "POST", "/v1/jobs") == 0.0
    assert limiter.check("bank-a", "POST", "/v1/jobs") == pytest.approx(10.0)  # the route's own rate
    assert limiter.check("bank-b", "POST", "/v1/jobs") == 0.0  # another member: its own bucket
    assert limiter.check("bank-a", "POST", "/v1/proposals") == 0.0  # another route: the write default
    assert limiter.check("bank-a", "POST", "/v1/proposals") == pytest.approx(1.0)
    assert [limiter.check("bank-a", "GET", "/v1/jobs/{job_id}") for _ in range(3)][-1] == pytest.approx(1.0)
    frames = RateLimiter(Limits(frames_rate=5.0, frames_burst=1), clock)
    assert frames.check("bank-a", "POST", "/v1/lists/{name}/psi/ot") == 0.0  # PSI frames: their own default
    assert frames.check("bank-a", "POST", "/v1/lists/{name}/psi/ot") == pytest.approx(0.2)


@pytest.mark.parametrize(
    "table, message",
    [
        ("read-rate = 0", "limits.read-rate must be > 0"),
        ('routes = { "POST /v1/jobs" = [1.0] }', "must be [requests per second > 0, burst ≥ 1]"),
        ('routes = { "DELETE /v1/jobs" = [1.0, 2] }', "must be a method and a path"),
        ("burst = 3", "unknown key 'burst' in [limits]"),
    ],
)
def test_bad_limits_are_refused_by_name(tmp_path, table, message):
    consortium = make_consortium(tmp_path, peers=("bank-a",))
    with open(consortium.config_path("bank-a"), "a") as handle:
        handle.write(f"\n[limits]\n{table}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(consortium.config_path("bank-a"))


async def _post(consortium, caller, url, body):
    identity = consortium.identity(caller)
    context = client_context(identity.ca_path, identity.cert_path, identity.key_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}) as reply:
            return reply.status, reply.headers.get("Retry-After"), await reply.json()


async def _gets(consortium, caller, url, count):
    identity = consortium.identity(caller)
    context = client_context(identity.ca_path, identity.cert_path, identity.key_path)
    statuses = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for _ in range(count):
            async with session.get(url) as reply:
                statuses.append(reply.status)
    return statuses


def test_a_member_over_its_limit_gets_429_nothing_changes_and_others_are_unaffected(tmp_path):
    consortium = make_consortium(tmp_path, peers=("bank-a", "bank-b", "bank-c"))
    with open(consortium.config_path("bank-b"), "a") as handle:
        handle.write(LIMITS)
    url = f"{consortium.addresses['bank-b']}/v1/proposals"
    jobs = {
        name: signed(
            consortium, consortium.job_toml(tmp_path / f"{name}.toml", name, host=host, participants=[host, "bank-b"])
        )
        for name, host in [("a-1", "bank-a"), ("a-2", "bank-a"), ("a-3", "bank-a"), ("c-1", "bank-c")]
    }

    async def body():
        async with running(consortium, ["bank-b"]):
            first = [await _post(consortium, "bank-a", url, jobs[name]) for name in ("a-1", "a-2")]
            before = state_of(consortium, "bank-b")
            limited = await _post(consortium, "bank-a", url, jobs["a-3"])
            after = state_of(consortium, "bank-b")
            other = await _post(consortium, "bank-c", url, jobs["c-1"])
            reads = await _gets(consortium, "bank-a", f"{consortium.addresses['bank-b']}/v1/health", 7)
            others_read = await _gets(consortium, "bank-c", f"{consortium.addresses['bank-b']}/v1/health", 5)
            return first, before, limited, after, other, reads, others_read, state_of(consortium, "bank-b")

    first, before, limited, after, other, reads, others_read, final = run(body())
    assert [(status, reply["decision"]) for status, _, reply in first] == [(200, "accepted"), (200, "accepted")]
    status, retry_after, reply = limited
    assert status == 429
    assert 90 <= int(retry_after) <= 100  # 1 token at 0.01/s, less the moments since the burst
    assert "bank-a sent more POST /v1/proposals requests than this peer allows" in reply["error"]
    assert after == before, "a request over the rate limit changed jobs, the ledger or the audit log"
    assert all(job != "a-3" for job, _ in after[0] + after[1])
    assert other[0] == 200 and other[2]["decision"] == "accepted"  # bank-c's bucket is its own
    assert ("c-1", "reserved") in final[1]
    assert reads == [200] * 5 + [429] * 2  # GET: the [limits] read burst of 5
    assert others_read == [200] * 5


def test_the_operator_on_the_admin_socket_is_not_limited(tmp_path):
    consortium = make_consortium(tmp_path, peers=("bank-a",))
    with open(consortium.config_path("bank-a"), "a") as handle:
        handle.write(LIMITS)
    socket_path = consortium.root / "bank-a" / "state" / "admin.sock"

    async def body():
        async with running(consortium, ["bank-a"]):
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path))) as session:
                statuses = []
                for _ in range(12):
                    async with session.get("http://peer/v1/health") as reply:
                        statuses.append(reply.status)
                return statuses

    assert run(body()) == [200] * 12


def test_the_client_waits_out_a_short_retry_after_and_reports_a_long_one_at_once(tmp_path):
    """PeerClient (what peers and the CLI use): a 429 asking for a second or two is retried after
    it; one asking for minutes is the peer saying no, reported without waiting."""
    import time

    from fedsilo.peers.daemon.client import PeerClient
    from fedsilo.peers.errors import PeerUnreachable

    consortium = make_consortium(tmp_path, peers=("bank-a", "bank-b"))
    with open(consortium.config_path("bank-b"), "a") as handle:
        handle.write('\n[limits]\nread-burst = 2\nread-rate = 1.0\nroutes = { "GET /v1/status" = [0.01, 1] }\n')
    base = consortium.addresses["bank-b"]

    async def body():
        async with running(consortium, ["bank-b"]):
            async with PeerClient(consortium.identity("bank-a")) as client:
                started = time.monotonic()
                health = [await client.call("GET", f"{base}/v1/health") for _ in range(4)]
                waited = time.monotonic() - started
                await client.call("GET", f"{base}/v1/status")
                started = time.monotonic()
                with pytest.raises(PeerUnreachable, match="answered 429") as refused:
                    await client.call("GET", f"{base}/v1/status")
                return health, waited, time.monotonic() - started, str(refused.value)

    health, waited, refused_after, message = run(body())
    assert len(health) == 4 and waited >= 1.0  # the 3rd and 4th GET waited for their tokens, then passed
    assert refused_after < 5 and "GET /v1/status" in message
