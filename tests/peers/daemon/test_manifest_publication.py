"""A removal published to one daemon reaches the others by itself and is refused in the TLS handshake.

Three real daemons on 127.0.0.1 over mutual TLS, polling each other every 0.5 s. The CA
removes bank-c and publishes the new manifest to bank-a only (the CLI, as risk-dept). From
the removed member's side: bank-c, holding a CA-signed certificate, a kept-alive connection
and a job it hosts at bank-b, gets an ssl error from bank-a and bank-b (no HTTP answer at
all, not a 403), cannot push its old manifest back, and its job at bank-b is cancelled with
its reservation released; bank-a refuses to connect out to bank-c's server. From any member's
side: a forged manifest, a rollback and the same version with other content pushed to bank-a
are answered 409 naming the reason, audited, and leave bank-a's manifest.json as it was.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import time

import pytest

from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.identity.consortium import publication, remove
from fedsilo.peers.identity.pki import load_private_key
from fedsilo.peers.identity.signing import sign_document
from fedsilo.peers.identity.tls import client_context

from ._consortium import make_consortium, member_client, run, running, signed
from .test_daemon_refusals import state_of

pytestmark = pytest.mark.slow


def _handshake_as(consortium, name: str, address: str) -> bytes:
    """A raw TLS connection with `name`'s certificate: the reply's first bytes, or ssl.SSLError."""
    ident = consortium.identity_dir(name)
    context = client_context(ident / "ca.pem", ident / "peer.pem", ident / "peer.key")
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the server checks the client's certificate inside the handshake
    host, port = address.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: peer\r\n\r\n")
            return tls.recv(12)


async def _publish(consortium, peer: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fedsilo.cli",
        "consortium",
        "publish",
        "--dir",
        str(consortium.root / "consortium"),
        "--peer",
        consortium.addresses[peer],
        "--identity",
        str(consortium.identity_dir("risk-dept")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


def test_a_removal_published_to_one_daemon_is_refused_in_the_tls_handshake_by_all(tmp_path):
    consortium = make_consortium(tmp_path)
    for name in consortium.peers:
        path = consortium.config_path(name)
        path.write_text(path.read_text().replace('state = "state"\n', 'state = "state"\nmanifest-poll-seconds = 0.5\n'))
    directory = consortium.root / "consortium"
    job = consortium.job_toml(tmp_path / "job.toml", "hosted-by-c", host="bank-c", min_participants=2)

    async def body():
        async with running(consortium) as services:
            async with member_client(consortium, "bank-c") as kept_alive:
                assert (await kept_alive.call("GET", f"{consortium.addresses['bank-a']}/v1/health"))["status"] == "ok"
                reply = await kept_alive.call(
                    "POST", f"{consortium.addresses['bank-b']}/v1/proposals", signed(consortium, job)
                )
                assert reply["decision"] == "accepted"
                old = publication(directory)
                before = await asyncio.to_thread(_handshake_as, consortium, "bank-c", consortium.addresses["bank-b"])
                assert before.startswith(b"HTTP/1.1 200")

                remove(directory, "bank-c")
                began = time.monotonic()
                printed = await _publish(consortium, "bank-a")
                while services["bank-b"].identity.manifest.version < 6 and time.monotonic() - began < 10:
                    await asyncio.sleep(0.1)
                propagated = time.monotonic() - began
                await asyncio.sleep(0.3)  # bank-b acts on it (cancels bank-c's job) right after taking it

                # bank-c, removed, with its CA-signed certificate: refused in the handshake, no HTTP answer
                # (asyncio closes a failed server handshake without flushing OpenSSL's "certificate revoked"
                # alert, so the client sees an EOF inside the handshake; the alert itself: test_revocation.py)
                for peer in ("bank-a", "bank-b"):
                    with pytest.raises(ssl.SSLError, match="EOF occurred in violation of protocol"):
                        await asyncio.to_thread(_handshake_as, consortium, "bank-c", consortium.addresses[peer])
                member_now = await asyncio.to_thread(
                    _handshake_as, consortium, "bank-a", consortium.addresses["bank-b"]
                )
                assert member_now.startswith(b"HTTP/1.1 200")  # the same handshake, by a member: answered
                with pytest.raises(PeerUnreachable) as on_kept_alive:  # its kept-alive connection was closed too
                    await kept_alive.call("GET", f"{consortium.addresses['bank-b']}/v1/health")
                with pytest.raises(PeerUnreachable) as push_back:
                    await kept_alive.call("POST", f"{consortium.addresses['bank-b']}/v1/manifest", old)
                # and bank-a will not connect out to bank-c's daemon
                with pytest.raises(PeerUnreachable, match="certificate") as out:
                    await services["bank-a"].context.client.call("GET", f"{consortium.addresses['bank-c']}/v1/health")

                # bad pushes from a member, to bank-a
                manifest_file = consortium.identity_dir("bank-a") / "manifest.json"
                held = manifest_file.read_bytes()
                current = publication(directory)
                forged = publication(directory)
                forged["manifest"]["manifest"]["members"].append(
                    dict(forged["manifest"]["manifest"]["members"][0], name="mallory")
                )
                other = publication(directory)
                other["manifest"]["manifest"]["issued"] = "2030-01-01T00:00:00+00:00"
                other["manifest"]["signature"] = sign_document(
                    load_private_key(directory / "ca.key"), other["manifest"]["manifest"]
                )
                refusals = []
                async with member_client(consortium, "bank-b") as member:
                    for bad in (forged, old, other):
                        with pytest.raises(PeerUnreachable) as refused:
                            await member.call("POST", f"{consortium.addresses['bank-a']}/v1/manifest", bad)
                        refusals.append(str(refused.value))
                    again = await member.call("POST", f"{consortium.addresses['bank-a']}/v1/manifest", current)
                unchanged = manifest_file.read_bytes() == held
            return printed, propagated, on_kept_alive.value, push_back.value, out.value, refusals, again, unchanged

    printed, propagated, on_kept_alive, push_back, out, refusals, again, unchanged = run(body())
    print(f"\npublish printed: {printed.strip()}\nbank-b had version 6 {propagated:.2f} s after the publish began")
    assert "published manifest version 6" in printed and "took it" in printed
    assert propagated < 10, "bank-b did not fetch the new manifest by itself"
    for error in (on_kept_alive, push_back):
        assert "answered" not in str(error), f"an HTTP answer, not a refused handshake: {error}"
    assert "revoked" in str(out) or "certificate verify failed" in str(out)
    assert "answered 409" in refusals[0] and "signature does not verify" in refusals[0]
    assert "answered 409" in refusals[1] and "older than version 6 held here" in refusals[1]
    assert "answered 409" in refusals[2] and "the version held here, with other content" in refusals[2]
    assert again == {"version": 6, "updated": False} and unchanged
    audit_a = state_of(consortium, "bank-a")[2]
    assert [a for a in audit_a if a[1] == "manifest.publish" and a[2] == "refused" and a[0] == "bank-b"].__len__() == 3
    assert ("risk-dept", "manifest.update", "ok") in [a[:3] for a in audit_a]
    jobs_b, ledger_b, audit_b = state_of(consortium, "bank-b")
    assert ("hosted-by-c", "cancelled") in jobs_b and not ledger_b  # cancelled at once, the reservation released
    assert any(a[1] == "manifest.update" and a[0] == "bank-a" for a in audit_b)  # bank-b took it from bank-a
    assert all(a[0] != "bank-c" for a in audit_b if a[1].startswith("manifest"))  # bank-c's push never arrived


def test_a_daemon_that_hears_of_a_newer_version_in_a_reply_fetches_it_at_once(tmp_path):
    """bank-b polls only every 10 minutes; one reply from bank-a announcing version 6 is enough."""
    consortium = make_consortium(tmp_path, peers=("bank-a", "bank-b"))
    path = consortium.config_path("bank-b")
    path.write_text(path.read_text().replace('state = "state"\n', 'state = "state"\nmanifest-poll-seconds = 600\n'))
    directory = consortium.root / "consortium"

    async def body():
        async with running(consortium) as services:
            remove(directory, "risk-dept")
            async with member_client(consortium, "bank-b") as member:
                taken = await member.call(
                    "POST", f"{consortium.addresses['bank-a']}/v1/manifest", publication(directory)
                )
            bank_b = services["bank-b"]
            assert bank_b.identity.manifest.version == 4  # nothing told bank-b yet
            await bank_b.context.client.call("GET", f"{consortium.addresses['bank-a']}/v1/health")
            began = time.monotonic()
            while bank_b.identity.manifest.version < 5 and time.monotonic() - began < 5:
                await asyncio.sleep(0.05)
            return taken, bank_b.identity.manifest.version, time.monotonic() - began

    taken, version, seconds = run(body())
    assert taken == {"version": 5, "updated": True}
    assert version == 5 and seconds < 5
    manifest = (consortium.identity_dir("bank-b") / "manifest.json").read_text()
    assert '"version": 5' in manifest and "risk-dept" not in manifest


def test_gm_a_pushed_manifest_without_the_cas_sm2_signature_is_refused(tmp_path):
    """Under gm the push is sealed end to end; the ECDSA signature alone does not make a version."""
    consortium = make_consortium(tmp_path, peers=("bank-a", "bank-b"), suite="gm")
    directory = consortium.root / "consortium"
    held = (consortium.identity_dir("bank-a") / "manifest.json").read_bytes()

    async def body():
        async with running(consortium, ["bank-a"]) as services:
            remove(directory, "risk-dept")
            stripped = publication(directory)
            del stripped["manifest"]["suite_signature"]
            async with member_client(consortium, "bank-b") as member:
                url = f"{consortium.addresses['bank-a']}/v1/manifest"
                with pytest.raises(PeerUnreachable) as refused:
                    await member.call("POST", url, stripped)
                unchanged = (consortium.identity_dir("bank-a") / "manifest.json").read_bytes() == held
                taken = await member.call("POST", url, publication(directory))
            return str(refused.value), unchanged, taken, services["bank-a"].identity.manifest.version

    refused, unchanged, taken, version = run(body())
    assert "answered 409" in refused and "must carry the CA's gm signature" in refused, refused
    assert unchanged and taken == {"version": 5, "updated": True} and version == 5
