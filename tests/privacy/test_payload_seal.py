"""The end-to-end payload seal (privacy/payload_seal.py) without the network: the SM2 ECDH against an
independent computation, the handshake's authentication, the frame bindings and the replay window."""

import time

import pytest

from fedsilo.privacy.crypto_suite import get_suite
from fedsilo.privacy.payload_seal import (
    WINDOW,
    ClientHandshake,
    SealError,
    SessionTable,
    UnknownSealSession,
    _agree,
    accept_hello,
)

# GB/T 32918.5 sm2p256v1
P = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF", 16)
A = P - 3


def _add(p1, p2):
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        slope = (3 * x1 * x1 + A) * pow(2 * y1, -1, P) % P
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (slope * slope - x1 - x2) % P
    return x3, (slope * (x1 - x3) - y1) % P


def _mul(k, point):
    result = None
    while k:
        if k & 1:
            result = _add(result, point)
        point, k = _add(point, point), k >> 1
    return result


@pytest.fixture(scope="module")
def gm():
    return get_suite("gm")


def test_the_gm_agreement_is_the_x_coordinate_of_d_times_p(gm):
    d_key, d_public = gm.agreement_keypair()
    peer_key, peer_public = gm.agreement_keypair()
    d = int.from_bytes(d_key, "big")
    point = (int.from_bytes(peer_public[1:33], "big"), int.from_bytes(peer_public[33:], "big"))
    assert gm.agree(d_key, peer_public) == _mul(d, point)[0].to_bytes(32, "big")
    assert gm.agree(d_key, peer_public) == gm.agree(peer_key, d_public)
    off_curve = peer_public[:-1] + bytes([peer_public[-1] ^ 1])
    with pytest.raises(SealError, match="ephemeral key is refused"):
        _agree(gm, d_key, off_curve)


def _pair(suite):
    client_key, server_key = suite.generate_signing_key(), suite.generate_signing_key()
    handshake = ClientHandshake(suite, client_key, "bank-a", "bank-b")
    answer, server = accept_hello(
        suite, server_key, "bank-b", "bank-a", handshake.hello(), suite.signing_public_key(client_key)
    )
    return handshake, answer, server, client_key, server_key


def test_the_handshake_refuses_an_answer_not_signed_by_the_receiver(gm):
    handshake, answer, _, _, _ = _pair(gm)
    with pytest.raises(SealError, match="not signed by bank-b's gm-suite key"):
        handshake.finish(answer, gm.signing_public_key(gm.generate_signing_key()))


def test_the_server_refuses_a_forged_misaddressed_stale_or_other_suite_hello(gm):
    client_key, server_key = gm.generate_signing_key(), gm.generate_signing_key()
    public = gm.signing_public_key(client_key)
    hello = ClientHandshake(gm, client_key, "bank-a", "bank-b").hello()
    with pytest.raises(SealError, match="from 'bank-a' to 'bank-b', but bank-c sent it to bank-b"):
        accept_hello(gm, server_key, "bank-b", "bank-c", hello, public)
    with pytest.raises(SealError, match="not signed by bank-a's gm-suite key"):
        accept_hello(gm, server_key, "bank-b", "bank-a", hello, gm.signing_public_key(gm.generate_signing_key()))
    with pytest.raises(SealError, match="off this peer's clock"):
        accept_hello(gm, server_key, "bank-b", "bank-a", {**hello, "time": int(time.time()) - 3600}, public)
    standard = get_suite("standard")
    other = ClientHandshake(standard, standard.generate_signing_key(), "bank-a", "bank-b").hello()
    with pytest.raises(SealError, match="for the 'standard' suite, but this consortium seals with the gm suite"):
        accept_hello(gm, server_key, "bank-b", "bank-a", other, public)


def test_frames_are_bound_to_route_status_and_order(gm):
    handshake, answer, server, _, server_key = _pair(gm)
    client = handshake.finish(answer, gm.signing_public_key(server_key))
    frames = [client.seal_request("POST", "/v1/lists/risk/psi", b"frame %d" % i) for i in range(3)]
    # out of order within the window is fine, each once
    assert server.open_request(frames[2][0], "POST", "/v1/lists/risk/psi") == (b"frame 2", 3)
    assert server.open_request(frames[0][0], "POST", "/v1/lists/risk/psi") == (b"frame 0", 1)
    with pytest.raises(SealError, match="replayed sealed frame"):
        server.open_request(frames[0][0], "POST", "/v1/lists/risk/psi")
    with pytest.raises(SealError, match="does not authenticate for POST /v1/lists/other/psi"):
        server.open_request(frames[1][0], "POST", "/v1/lists/other/psi")
    reply = server.seal_reply(3, "POST", "/v1/lists/risk/psi", 200, b"answer")
    assert client.open_reply(reply, 3, "POST", "/v1/lists/risk/psi", 200) == b"answer"
    with pytest.raises(SealError, match="status 403"):
        client.open_reply(reply, 3, "POST", "/v1/lists/risk/psi", 403)
    with pytest.raises(SealError, match="another session or request"):
        client.open_reply(reply, 1, "POST", "/v1/lists/risk/psi", 200)
    # a request frame sent back as a reply (direction) does not open
    with pytest.raises(SealError):
        client.open_reply(frames[2][0], 3, "POST", "/v1/lists/risk/psi", 200)
    # far behind the window
    client.next_seq = 3 + WINDOW + 10
    far, _ = client.seal_request("POST", "/v1/lists/risk/psi", b"late")
    server.open_request(far, "POST", "/v1/lists/risk/psi")
    with pytest.raises(SealError, match="older than the last"):
        server.open_request(frames[1][0], "POST", "/v1/lists/risk/psi")


def test_the_session_table_serves_only_the_session_owner(gm):
    handshake, answer, server, _, server_key = _pair(gm)
    client = handshake.finish(answer, gm.signing_public_key(server_key))
    table = SessionTable()
    table.add(server)
    frame, _ = client.seal_request("GET", "/v1/jobs", b"")
    assert table.find(frame, "gm", "bank-a") is server
    with pytest.raises(UnknownSealSession, match="does not hold for bank-c"):
        table.find(frame, "gm", "bank-c")
    with pytest.raises(SealError, match="sealed with the 'gm' suite, but this consortium seals with the standard"):
        table.find(frame, "standard", "bank-a")


def test_the_standard_suite_runs_the_same_construction():
    standard = get_suite("standard")
    handshake, answer, server, _, server_key = _pair(standard)
    client = handshake.finish(answer, standard.signing_public_key(server_key))
    frame, seq = client.seal_request("GET", "/v1/jobs", b"x")
    assert server.open_request(frame, "GET", "/v1/jobs") == (b"x", seq)
