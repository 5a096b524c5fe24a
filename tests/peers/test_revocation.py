"""The consortium's CRL and manifest publication, without daemons (the daemons: test_manifest_publication).

Attackers: a removed member whose certificate the CA still signed (refused in the TLS handshake
once the CRL is loaded, also into a context already serving); whoever can reach a daemon and
pushes a forged manifest, an older one (a rollback), or the same version with other content;
a gm-consortium manifest without the CA's SM2 signature. Each is refused with an error naming
what is wrong, and the member's manifest.json and crl.pem stay byte for byte what they were.
"""

from __future__ import annotations

import asyncio
import errno
import json
import shutil
import socket
import ssl
import threading
from pathlib import Path

import aiohttp
import pytest

from fedsilo.errors import ConfigError
from fedsilo.peers.daemon.client import PeerClient, closed_by_peer
from fedsilo.peers.daemon.config import parse_config
from fedsilo.peers.errors import IdentityError, PeerUnreachable
from fedsilo.peers.identity import revocation
from fedsilo.peers.identity.consortium import (
    Identity,
    admit,
    ensure_crl,
    init_consortium,
    init_peer,
    publication,
    remove,
)
from fedsilo.peers.identity.manifest import Manifest
from fedsilo.peers.identity.pki import load_certificate, load_private_key
from fedsilo.peers.identity.signing import sign_document
from fedsilo.peers.identity.tls import add_crl, client_context, server_context

ADDRESS = "https://127.0.0.1:{}"


def _consortium(tmp_path: Path, suite: str = "standard", names: tuple[str, ...] = ("bank-a", "bank-b", "bank-c")):
    init_consortium(tmp_path / "c", "acme", suite)
    for index, name in enumerate(names):
        request = init_peer(tmp_path / name, name, None if suite == "standard" else suite)
        signing = None if suite == "standard" else tmp_path / name / "signing.pub"
        admit(
            tmp_path / "c",
            request,
            ("peer",),
            ADDRESS.format(17001 + index),
            tmp_path / name / "peer.pem",
            signing_key=signing,
        )
    for name in names:
        for file in ("ca.pem", "ca-signing.pub", "manifest.json", "crl.pem"):
            if (tmp_path / "c" / file).exists():
                shutil.copy(tmp_path / "c" / file, tmp_path / name / file)
    return tmp_path


def _files(directory: Path) -> tuple[bytes, bytes]:
    return (directory / "manifest.json").read_bytes(), (directory / "crl.pem").read_bytes()


# -- the CRL in TLS ----------------------------------------------------------------------
class _Server:
    """A mutual-TLS server on 127.0.0.1 in a thread: answers b"ok" to each handshake it completes."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

    def close(self) -> None:
        self.listener.close()


def _handshake(tmp_path: Path, name: str, port: int, crl: Path | None = None) -> bytes:
    """Connect as `name`, read the server's answer; ssl.SSLError if either side refuses."""
    context = client_context(tmp_path / "c" / "ca.pem", tmp_path / name / "peer.pem", tmp_path / name / "peer.key", crl)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.recv(2)


def test_a_crl_added_to_a_live_context_refuses_the_removed_member_at_the_next_handshake(tmp_path):
    _consortium(tmp_path)
    crl_before = tmp_path / "crl-v4.pem"
    shutil.copy(tmp_path / "c" / "crl.pem", crl_before)
    context = server_context(
        tmp_path / "c" / "ca.pem", tmp_path / "bank-a" / "peer.pem", tmp_path / "bank-a" / "peer.key", crl_before
    )
    server = _Server(context)
    try:
        assert _handshake(tmp_path, "bank-c", server.port) == b"ok"
        remove(tmp_path / "c", "bank-c")  # at once: the new CRL is issued within the same second as the last
        add_crl(context, tmp_path / "c" / "crl.pem")  # the serving context, not a new one
        with pytest.raises(ssl.SSLError, match="revoked"):
            _handshake(tmp_path, "bank-c", server.port)
        assert _handshake(tmp_path, "bank-b", server.port) == b"ok"
    finally:
        server.close()


def test_a_client_with_the_crl_refuses_a_removed_members_server(tmp_path):
    _consortium(tmp_path)
    remove(tmp_path / "c", "bank-c")
    context = server_context(
        tmp_path / "c" / "ca.pem", tmp_path / "bank-c" / "peer.pem", tmp_path / "bank-c" / "peer.key"
    )
    server = _Server(context)  # bank-c serves with its (CA-signed, revoked) certificate
    try:
        with pytest.raises(ssl.SSLError, match="revoked"):
            _handshake(tmp_path, "bank-a", server.port, crl=tmp_path / "c" / "crl.pem")
    finally:
        server.close()


def test_crl_checking_without_a_crl_refuses_everyone_so_a_context_gets_it_only_with_one(tmp_path):
    """OpenSSL's fact behind `server_context(crl=None)` checking no CRL, and behind a CRL from `init` on."""
    _consortium(tmp_path)
    context = server_context(
        tmp_path / "c" / "ca.pem", tmp_path / "bank-a" / "peer.pem", tmp_path / "bank-a" / "peer.key"
    )
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF  # checking on, no CRL loaded
    server = _Server(context)
    try:
        with pytest.raises(ssl.SSLError):
            _handshake(tmp_path, "bank-b", server.port)
    finally:
        server.close()


def test_each_crl_is_later_than_the_last_and_numbered_with_its_manifest_version(tmp_path):
    _consortium(tmp_path, names=("bank-a", "bank-b"))
    ca = load_certificate(tmp_path / "c" / "ca.pem")
    first = revocation.load(tmp_path / "c" / "crl.pem", ca)
    remove(tmp_path / "c", "bank-a")
    second = revocation.load(tmp_path / "c" / "crl.pem", ca)
    remove(tmp_path / "c", "bank-b")
    third = revocation.load(tmp_path / "c" / "crl.pem", ca)
    assert first is not None and second is not None and third is not None
    assert [revocation.number(c) for c in (first, second, third)] == [3, 4, 5]
    assert first.last_update_utc < second.last_update_utc < third.last_update_utc
    serials = {load_certificate(tmp_path / n / "peer.pem").serial_number for n in ("bank-a", "bank-b")}
    assert revocation.serials(first) == [] and set(revocation.serials(third)) == serials


# -- removal in an older consortium directory ----------------------------------------------
def test_an_older_consortium_directory_gets_its_first_crl_and_removal_asks_for_the_certificate(tmp_path):
    _consortium(tmp_path, names=("bank-a", "bank-b"))
    (tmp_path / "c" / "crl.pem").unlink()  # as `consortium init` left it before CRLs
    shutil.rmtree(tmp_path / "c" / "issued")
    before = (tmp_path / "c" / "manifest.json").read_bytes()
    with pytest.raises(IdentityError, match="--certificate PATH"):
        remove(tmp_path / "c", "bank-a")
    with pytest.raises(IdentityError, match="not the certificate the manifest names for bank-a"):
        remove(tmp_path / "c", "bank-a", tmp_path / "bank-b" / "peer.pem")
    assert (tmp_path / "c" / "manifest.json").read_bytes() == before
    manifest = remove(tmp_path / "c", "bank-a", tmp_path / "bank-a" / "peer.pem")
    crl = revocation.load(tmp_path / "c" / "crl.pem", load_certificate(tmp_path / "c" / "ca.pem"))
    assert crl is not None and revocation.number(crl) == manifest.version == 4
    assert revocation.serials(crl) == [load_certificate(tmp_path / "bank-a" / "peer.pem").serial_number]
    assert ensure_crl(tmp_path / "c") is False


def test_an_identity_without_a_crl_loads_and_takes_its_first_crl_with_the_same_version(tmp_path):
    _consortium(tmp_path, names=("bank-a", "bank-b"))
    (tmp_path / "bank-a" / "crl.pem").unlink()
    identity = Identity.load(tmp_path / "bank-a")
    assert identity.crl is None
    assert identity.accept(publication(tmp_path / "c"), "bank-b") is True
    assert identity.crl is not None and (tmp_path / "bank-a" / "crl.pem").exists()
    assert identity.accept(publication(tmp_path / "c"), "bank-b") is False  # nothing new


# -- publications a member takes or refuses -------------------------------------------------
def test_a_newer_version_is_taken_and_written(tmp_path):
    _consortium(tmp_path)
    identity = Identity.load(tmp_path / "bank-a")
    remove(tmp_path / "c", "bank-c")
    assert identity.accept(publication(tmp_path / "c"), "bank-b") is True
    assert identity.manifest.version == 5 and identity.manifest.member("bank-c") is None
    assert _files(tmp_path / "bank-a") == _files(tmp_path / "c")
    reloaded = Identity.load(tmp_path / "bank-a")
    assert reloaded.manifest.version == 5 and reloaded.crl is not None


def _forged(tmp_path: Path) -> dict:
    """The consortium's publication with a member added to the body, the CA's signature kept."""
    published = publication(tmp_path / "c")
    published["manifest"]["manifest"]["members"].append(dict(published["manifest"]["manifest"]["members"][0]))
    published["manifest"]["manifest"]["members"][-1]["name"] = "mallory"
    return published


def _same_version_other_content(tmp_path: Path) -> dict:
    """A CA-signed manifest of the held version with other content (another issue time)."""
    published = publication(tmp_path / "c")
    body = published["manifest"]["manifest"]
    body["issued"] = "2030-01-01T00:00:00+00:00"
    published["manifest"]["signature"] = sign_document(load_private_key(tmp_path / "c" / "ca.key"), body)
    return published


def _wrong_crl(tmp_path: Path) -> dict:
    """The newer manifest with the previous CRL (which does not revoke the removed member)."""
    old_crl = (tmp_path / "c" / "crl.pem").read_text()
    remove(tmp_path / "c", "bank-b")
    published = publication(tmp_path / "c")
    published["crl"] = old_crl
    return published


def _crl_of_another_ca(tmp_path: Path) -> dict:
    init_consortium(tmp_path / "other", "acme")
    published = publication(tmp_path / "c")
    published["crl"] = (tmp_path / "other" / "crl.pem").read_text()
    return published


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (_forged, "signature does not verify"),
        (_same_version_other_content, "the version held here, with other content"),
        (_wrong_crl, "is number 4, not the manifest's version 5"),
        (_crl_of_another_ca, "not signed by the consortium's CA"),
        (lambda tmp_path: {"manifest": "x"}, "is not a consortium manifest"),
        (lambda tmp_path: [1, 2], "not a manifest publication"),
    ],
)
def test_a_bad_publication_is_refused_and_changes_nothing(tmp_path, make, error):
    _consortium(tmp_path)
    identity = Identity.load(tmp_path / "bank-a")
    before = _files(tmp_path / "bank-a")
    published = make(tmp_path)
    with pytest.raises(IdentityError, match=error):
        identity.accept(published, "bank-c")
    assert _files(tmp_path / "bank-a") == before and identity.manifest.version == 4


def test_a_rollback_is_refused_and_changes_nothing(tmp_path):
    _consortium(tmp_path)
    old = publication(tmp_path / "c")
    remove(tmp_path / "c", "bank-c")
    identity = Identity.load(tmp_path / "bank-a")
    identity.accept(publication(tmp_path / "c"), "bank-b")
    after = _files(tmp_path / "bank-a")
    with pytest.raises(IdentityError, match="version 4, older than version 5 held here: a manifest never rolls back"):
        identity.accept(old, "bank-c")
    assert _files(tmp_path / "bank-a") == after and identity.manifest.member("bank-c") is None


def test_a_newer_version_without_its_crl_is_refused(tmp_path):
    _consortium(tmp_path)
    identity = Identity.load(tmp_path / "bank-a")
    before = _files(tmp_path / "bank-a")
    remove(tmp_path / "c", "bank-c")
    published = publication(tmp_path / "c")
    published["crl"] = None
    with pytest.raises(IdentityError, match="comes without the CA's revocation list"):
        identity.accept(published, "bank-b")
    assert _files(tmp_path / "bank-a") == before


def test_gm_a_manifest_without_the_sm2_signature_is_refused(tmp_path):
    _consortium(tmp_path, suite="gm", names=("bank-a", "bank-b"))
    identity = Identity.load(tmp_path / "bank-a")
    before = _files(tmp_path / "bank-a")
    remove(tmp_path / "c", "bank-b")
    published = publication(tmp_path / "c")
    assert "suite_signature" in published["manifest"]
    del published["manifest"]["suite_signature"]  # the ECDSA signature alone still verifies
    with pytest.raises(IdentityError, match="must carry the CA's gm signature"):
        identity.accept(published, "bank-b")
    assert _files(tmp_path / "bank-a") == before
    assert identity.accept(publication(tmp_path / "c"), "bank-a") is True  # the CA's own, both signatures


def test_the_manifest_poll_interval_is_read_from_peer_toml(tmp_path):
    base = {"peer": {"identity": "identity", "state": "state"}}
    assert parse_config(base, tmp_path).manifest_poll_seconds == 60.0
    assert parse_config({"peer": {**base["peer"], "manifest-poll-seconds": 2}}, tmp_path).manifest_poll_seconds == 2.0
    for bad in (0, -1, "60", True, 10**6):
        with pytest.raises(ConfigError, match="manifest-poll-seconds"):
            parse_config({"peer": {**base["peer"], "manifest-poll-seconds": bad}}, tmp_path)


def test_remove_tells_how_the_new_version_propagates(tmp_path):
    import subprocess
    import sys

    _consortium(tmp_path, names=("bank-a",))
    done = subprocess.run(
        [sys.executable, "-m", "fedsilo.cli", "consortium", "remove", "bank-a", "--dir", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "fedsilo consortium publish --dir" in done.stdout and "TLS handshake" in done.stdout
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["manifest"]["version"] == 3
    assert Manifest.load(tmp_path / "c" / "manifest.json", load_certificate(tmp_path / "c" / "ca.pem")).members == ()


def test_a_manifest_copied_in_by_hand_brings_its_crl(tmp_path):
    _consortium(tmp_path)
    identity = Identity.load(tmp_path / "bank-a")
    remove(tmp_path / "c", "bank-c")
    shutil.copy(tmp_path / "c" / "crl.pem", tmp_path / "bank-a" / "crl.pem")
    shutil.copy(tmp_path / "c" / "manifest.json", tmp_path / "bank-a" / "manifest.json")
    assert identity.current_manifest().version == 5
    assert identity.crl is not None and revocation.number(identity.crl) == 5


def test_a_removed_member_is_told_why_the_peer_closed_whether_it_saw_a_reset_or_a_disconnection(tmp_path):
    """The removed member's side: every refused request names revocation as the likely cause.

    After TLS 1.3's handshake the server refuses the revoked certificate and closes; the client
    sees the server's alert, a disconnection or `ECONNRESET`, by timing (the walkthrough's run
    printed the reset)."""
    _consortium(tmp_path)
    remove(tmp_path / "c", "bank-c")
    context = server_context(
        tmp_path / "c" / "ca.pem", tmp_path / "bank-a" / "peer.pem", tmp_path / "bank-a" / "peer.key"
    )
    add_crl(context, tmp_path / "c" / "crl.pem")
    server = _Server(context)

    async def ask() -> list[str]:
        errors = []
        async with PeerClient(Identity.load(tmp_path / "bank-c"), timeout=10) as client:
            for _ in range(5):
                with pytest.raises(PeerUnreachable) as refused:
                    await client.call("GET", f"https://127.0.0.1:{server.port}/v1/status")
                errors.append(str(refused.value))
        return errors

    try:
        errors = asyncio.run(ask())
    finally:
        server.close()
    # the SSL alert names it itself; a reset or a disconnection gets the hint
    assert all("certificate revoked" in e or "revoked when you left the consortium" in e for e in errors), errors
    # both ways the closing shows up get the hint; a connect that fails (nobody listening) does not
    assert closed_by_peer(aiohttp.ServerDisconnectedError())
    assert closed_by_peer(aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"))
    assert not closed_by_peer(aiohttp.ClientOSError(errno.EPIPE, "Broken pipe"))
    refused_connect = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 1, False, True, None, None, None),
        OSError(errno.ECONNRESET, "reset"),
    )
    assert not closed_by_peer(refused_connect)
