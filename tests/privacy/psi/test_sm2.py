"""The gm suite's PSI group: RFC 9380 hashing onto sm2p256v1, Tongsuo's arithmetic, refused points, PSI on it."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fedsilo.errors import ProtocolError
from fedsilo.privacy.psi import (
    EncryptedTable,
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
    tongsuo_ec,
)
from fedsilo.privacy.psi.wire import HEADER, FrameType, decode, split

from ._plaintext import (
    EDGE_CASES,
    assert_both_sides_match_plaintext,
    customers_and_their_wire,
    expected_positions,
    rand_ids,
)

P = sm2.SM2.p
A = sm2.SM2.a
B = sm2.SM2.b
# GB/T 32918.5-2017: the generator of sm2p256v1.
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0
P256 = sm2.Curve(
    p=0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
    a=0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFC,
    b=0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    n=0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    z=-10,
)


# -- independent reference arithmetic (plain Python ints) ------------------------------------------


def _on_curve(x: int, y: int, c: sm2.Curve = sm2.SM2) -> bool:
    return (y * y - (x * x * x + c.a * x + c.b)) % c.p == 0


def _add(p1: tuple[int, int], p2: tuple[int, int], c: sm2.Curve) -> tuple[int, int]:
    """Affine addition of two distinct, non-opposite points."""
    slope = (p2[1] - p1[1]) * pow(p2[0] - p1[0], -1, c.p) % c.p
    x = (slope * slope - p1[0] - p2[0]) % c.p
    return x, (slope * (p1[0] - x) - p1[1]) % c.p


def _decompress(row: bytes) -> tuple[int, int]:
    x = int.from_bytes(row[1:], "big")
    y = pow((x**3 + A * x + B) % P, (P + 1) // 4, P)
    if y % 2 != row[0] - 2:
        y = P - y
    return x, y


def _compress(point: tuple[int, int]) -> bytes:
    return bytes([2 + point[1] % 2]) + point[0].to_bytes(32, "big")


def _is_square(x: int, p: int) -> bool:
    return pow(x % p, (p - 1) // 2, p) in (0, 1)


def _polymulmod(f: list[int], g: list[int], m: list[int], p: int) -> list[int]:
    """f * g modulo the monic cubic x^3 + m[2] x^2 + m[1] x + m[0] (coefficients low to high)."""
    r = [0] * (len(f) + len(g) - 1)
    for i, x in enumerate(f):
        for j, y in enumerate(g):
            r[i + j] = (r[i + j] + x * y) % p
    while len(r) > 3:
        top, k = r.pop(), len(r)
        for t in range(3):
            r[k - 3 + t] = (r[k - 3 + t] - top * m[t]) % p
    return r


def _has_root(c: sm2.Curve, z: int) -> bool:
    """Whether x^3 + a x + b - z has a root in GF(p): gcd(x^p - x, g - z) != 1 (a cubic without one is irreducible)."""
    p = c.p
    m = [(c.b - z) % p, c.a % p, 0]
    result, base, e = [1], [0, 1], p
    while e:
        if e & 1:
            result = _polymulmod(result, base, m, p)
        base, e = _polymulmod(base, base, m, p), e >> 1
    result = (result + [0, 0, 0])[:3]
    u, v = [*m, 1], [result[0], (result[1] - 1) % p, result[2]]

    def trim(w: list[int]) -> list[int]:
        while w and w[-1] == 0:
            w = w[:-1]
        return w

    u, v = trim(u), trim(v)
    while v:
        while len(u) >= len(v):
            q, d = u[-1] * pow(v[-1], -1, p) % p, len(u) - len(v)
            u = trim([(u[i] - q * v[i - d]) % p if i >= d else u[i] for i in range(len(u))])
        u, v = v, u
    return len(u) > 1


def _find_z_sswu(c: sm2.Curve) -> int:
    """RFC 9380 Appendix H.2's find_z_sswu."""
    ctr = 1
    while True:
        for z in (ctr, -ctr):
            g = (B_over := c.b * pow(z * c.a, -1, c.p)) ** 3 + c.a * B_over + c.b
            if not _is_square(z, c.p) and z % c.p != c.p - 1 and not _has_root(c, z) and _is_square(g, c.p):
                return z
        ctr += 1


def _rows(*encoded: bytes) -> np.ndarray:
    return np.frombuffer(b"".join(encoded), np.uint8).reshape(-1, 33)


# -- the private Tongsuo API --------------------------------------------------------------------


def test_the_private_tongsuo_api_this_module_relies_on_is_still_there():
    from tongsuopy.backends.tongsuo.backend import backend

    missing = [name for name in tongsuo_ec.NAMES if not hasattr(backend._lib, name)]
    assert missing == [], f"tongsuopy no longer exposes {missing}: privacy/psi/tongsuo_ec.py must change"
    assert backend._lib.EC_GROUP_get_curve_name(tongsuo_ec._GROUP) == tongsuo_ec.SM2_NID
    generator = b"\x04" + GX.to_bytes(32, "big") + GY.to_bytes(32, "big")
    assert tongsuo_ec.compress(generator) == _compress((GX, GY))  # Tongsuo's curve is the one sm2.py describes
    assert _on_curve(GX, GY)


# -- RFC 9380 ---------------------------------------------------------------------------------------


def test_z_is_the_rfc9380_h2_choice_for_sm2_and_the_rule_gives_p256s_published_z():
    assert _find_z_sswu(P256) == -10  # RFC 9380 §8.2: P-256's Z; checks this reference implementation of the rule
    assert _find_z_sswu(sm2.SM2) == sm2.Z == -9


@pytest.mark.parametrize(
    "msg,length,expected",
    [  # RFC 9380 Appendix K.1, expand_message_xmd(SHA-256), DST "QUUX-V01-CS02-with-expander-SHA256-128"
        (b"", 0x20, "68a985b87eb6b46952128911f2a4412bbc302a9d759667f87f7a21d803f07235"),
        (b"abc", 0x20, "d8ccab23b5985ccea865c6c97b6e5b8350e794e603b4b97902f53a8a0d605615"),
        (b"abcdef0123456789", 0x20, "eff31487c770a893cfb36f912fbfcbff40d5661771ca4b2cb4eafe524333f5c1"),
        (
            b"",
            0x80,
            "af84c27ccfd45d41914fdff5df25293e221afc53d8ad2ac06d5e3e29485dadbee0d121587713a3e0dd4d5e69e93eb7cd4f5df4"
            "cd103e188cf60cb02edc3edf18eda8576c412b18ffb658e3dd6ec849469b979d444cf7b26911a08e63cf31f9dcc541708d349"
            "1184472c2c29bb749d4286b004ceb5ee6b9a7fa5b646c993f0ced",
        ),
        (
            b"abc",
            0x80,
            "abba86a6129e366fc877aab32fc4ffc70120d8996c88aee2fe4b32d6c7b6437a647e6c3163d40b76a73cf6a5674ef1d890f95"
            "b664ee0afa5359a5c4e07985635bbecbac65d747d3d2da7ec2b8221b17b0ca9dc8a1ac1c07ea6a1e60583e2cb00058e77b7b"
            "72a298425cd1b941ad4ec65e8afc50303a22c0f99b0509b4c895f40",
        ),
    ],
)
def test_expand_message_xmd_on_rfc9380s_sha256_vectors(msg, length, expected):
    dst = b"QUUX-V01-CS02-with-expander-SHA256-128"
    assert sm2.expand_message_xmd(msg, dst, length, "sha256").hex() == expected


@pytest.mark.parametrize(
    "msg,px,py",
    [  # RFC 9380 Appendix J.1.1, P256_XMD:SHA-256_SSWU_RO_
        (
            b"",
            0x2C15230B26DBC6FC9A37051158C95B79656E17A1A920B11394CA91C44247D3E4,
            0x8A7A74985CC5C776CDFE4B1F19884970453912E9D31528C060BE9AB5C43E8415,
        ),
        (
            b"abc",
            0x0BB8B87485551AA43ED54F009230450B492FEAD5F1CC91658775DAC4A3388A0F,
            0x5C41B3D0731A27A7B14BC0BF0CCDED2D8751F83493404C84A88E71FFD424212E,
        ),
    ],
)
def test_the_sswu_map_reproduces_rfc9380s_p256_vectors(msg, px, py):
    """The map's code is curve-generic (a = -3, p = 3 mod 4, like SM2): on P-256 it must give the RFC's points."""
    u0, u1 = sm2.hash_to_field(msg, b"QUUX-V01-CS02-with-P256_XMD:SHA-256_SSWU_RO_", 2, P256, "sha256")
    if msg == b"":
        assert u0 == 0xAD5342C66A6DD0FF080DF1DA0EA1C04B96E0330DD89406465EEBA11582515009
        assert u1 == 0x8C0F1D43204BD6F6EA70AE8013070A1518B43873BCD850AAFA0A9E220E2EEA5A
    q0, q1 = sm2.map_to_curve(u0, P256), sm2.map_to_curve(u1, P256)
    assert _on_curve(*q0, P256) and _on_curve(*q1, P256)
    assert _add(q0, q1, P256) == (px, py)


def test_the_map_lands_on_sm2_for_every_kind_of_input_including_the_exceptional_ones():
    rng = random.Random(7)
    inputs = [0, 1, P - 1, *(rng.randrange(P) for _ in range(300))]  # u = 0: tv2 = 0, the exceptional case
    points = [sm2.map_to_curve(u) for u in inputs]
    assert all(_on_curve(x, y) for x, y in points)
    assert all((u % 2) == (y % 2) for u, (_, y) in zip(inputs, points))  # sgn0(y) == sgn0(u)
    squares = sum(_is_square((x**3 + A * x + B), P) for x in (sm2.Z * u * u for u in inputs[3:]))
    assert 0 < squares < 300  # both branches of the map (x1 or x2) were exercised


def test_hash_to_curve_is_the_sum_of_the_two_maps_computed_independently_and_is_deterministic():
    ids = [f"id:cust-{i}".encode() for i in range(200)]
    points = sm2.hash_to_curve(ids, sm2.PSI_DST)
    assert points.shape == (200, 33)
    for msg, row in zip(ids[:60], points[:60]):
        u0, u1 = sm2.hash_to_field(msg, sm2.PSI_DST)
        assert row.tobytes() == _compress(_add(sm2.map_to_curve(u0), sm2.map_to_curve(u1), sm2.SM2))
    assert all(_on_curve(*_decompress(row.tobytes())) for row in points)
    assert np.array_equal(sm2.hash_to_curve(ids, sm2.PSI_DST), points)  # deterministic
    assert np.array_equal(sm2.hash_to_curve(ids[5:9], sm2.PSI_DST), points[5:9])  # batch-independent
    assert len({row.tobytes() for row in points}) == 200
    query = sm2.hash_to_curve(ids, sm2.QUERY_DST)  # another DST, other points
    assert not ({row.tobytes() for row in query} & {row.tobytes() for row in points})
    assert b"fedsilo" in sm2.PSI_DST and b"gm" in sm2.PSI_DST and b"v3" in sm2.PSI_DST
    assert sm2.hash_to_curve([], sm2.PSI_DST).shape == (0, 33)


# -- scalars and arithmetic ---------------------------------------------------------------------


def test_scalars_come_from_the_os_csprng_uniform_in_1_to_n(monkeypatch):
    draws = iter([b"\xff" * 32, bytes(32), (5).to_bytes(32, "big")])  # >= n and 0 are rejected
    monkeypatch.setattr(sm2.os, "urandom", lambda n: next(draws))
    assert sm2.random_scalar() == (5).to_bytes(32, "big")
    monkeypatch.undo()
    scalars = {sm2.random_scalar() for _ in range(100)}
    assert len(scalars) == 100 and all(0 < int.from_bytes(s, "big") < sm2.SM2.n for s in scalars)


def test_blinding_commutes_inverts_and_matches_plain_python_scalar_multiplication():
    points = sm2.hash_to_curve([b"a", b"b", b"c"], sm2.QUERY_DST)
    a, b = sm2.random_scalar(), sm2.random_scalar()
    ab = sm2.multiply(sm2.multiply(points, a), b)
    assert np.array_equal(ab, sm2.multiply(sm2.multiply(points, b), a))
    assert np.array_equal(sm2.multiply(sm2.multiply(points, a), sm2.invert_scalar(a)), points)
    scalars = np.frombuffer(a + b + a, np.uint8).reshape(3, 32)
    each = sm2.multiply_each(points, scalars)
    assert np.array_equal(each[[0, 2]], sm2.multiply(points[[0, 2]], a))
    assert np.array_equal(each[1], sm2.multiply(points[1:2], b)[0])
    double = sm2.multiply(points[:1], (2).to_bytes(32, "big"))[0].tobytes()  # 2P by the tangent rule, in Python
    x, y = _decompress(points[0].tobytes())
    slope = (3 * x * x + A) * pow(2 * y, -1, P) % P
    x2 = (slope * slope - 2 * x) % P
    assert double == _compress((x2, (slope * (x - x2) - y) % P))
    with pytest.raises(ProtocolError, match=r"\[1, n\)"):
        sm2.invert_scalar(bytes(32))


def _off_curve_x() -> int:
    x = 5
    while _is_square(x**3 + A * x + B, P):
        x += 1
    return x


@pytest.mark.parametrize(
    "row,match",
    [
        (b"\x00" * 33, "point at infinity"),
        (b"\x04" + GX.to_bytes(32, "big"), r"not a compressed point \(prefix 0x04\)"),
        (b"\x02" + b"\xff" * 32, "x >= p"),
        (b"\x02" + P.to_bytes(32, "big"), "x >= p"),
        (b"\x03" + _off_curve_x().to_bytes(32, "big"), "not on the curve sm2p256v1"),
    ],
)
def test_received_points_that_are_not_on_the_curve_are_refused_by_name(row, match):
    good = sm2.hash_to_curve([b"x", b"y"], sm2.PSI_DST)
    rows = _rows(good[0].tobytes(), good[1].tobytes(), row)
    with pytest.raises(ProtocolError, match=rf"position 12 .*{match}|position 12 is {match}|{match}"):
        sm2.check_elements(rows, offset=10)
    with pytest.raises(ProtocolError, match="position 2"):
        sm2.multiply(rows, sm2.random_scalar())
    with pytest.raises(ProtocolError, match=match):
        sm2.multiply_each(rows, np.frombuffer(sm2.random_scalar() * 3, np.uint8).reshape(3, 32))
    # Tongsuo's own decoder refuses them too (the second line of defence behind check_elements)
    assert tongsuo_ec.multiply([row], sm2.random_scalar()) == ([], 0)


# -- PSI on the SM2 curve -----------------------------------------------------------------------


def _run(xs, ys, mode, kind="id", workers=None, tap=None, suite="gm"):
    r = PsiReceiver(xs, kind=kind, mode=mode, workers=workers, suite=suite)
    s = PsiSender(ys, kind=kind, mode=mode, workers=workers, suite=suite)
    exchange(r, s, tap)
    return r.result(), s.result()


@pytest.mark.parametrize("seed", [0, 1])
def test_gm_psi_matches_the_plaintext_intersection_on_random_sets(seed):
    rng = random.Random(seed)
    pool = rand_ids(rng, 200)
    xs, ys = rng.sample(pool, rng.randint(0, 120)), rng.sample(pool, rng.randint(0, 120))
    r, s = _run(xs, ys, Mode.TO_BOTH)
    assert_both_sides_match_plaintext(r, s, xs, ys)
    assert r.shared_keys.shape[1] == 33
    assert {row.tobytes() for row in r.shared_keys} == {row.tobytes() for row in s.shared_keys}


@pytest.mark.parametrize("xs,ys", EDGE_CASES)
def test_gm_psi_on_empty_sets_duplicates_and_unicode(xs, ys):
    for mode in Mode:
        r, s = _run(xs, ys, mode)
        expected = expected_positions(xs, ys)
        assert r.cardinality == len(expected)
        assert r.own_size == s.peer_size == len({canonical(x, "id") for x in xs})
        assert (r.positions is None) if mode is Mode.CARDINALITY else (r.positions.tolist() == expected)


def test_gm_wire_carries_sm2_points_and_no_identifier_or_unblinded_hash():
    customers, wire = customers_and_their_wire(_run)
    frames = split(wire)
    assert frames and all(frame[4] == 3 and frame[7] == 1 for frame in frames)  # version 3, group SM2
    assert all(decode(frame, group=1).elements.shape[1] == 33 for frame in frames)
    for ident in customers:
        c = canonical(ident, "id")
        unblinded = sm2.hash_to_curve([c], sm2.PSI_DST)[0].tobytes()
        for needle in (ident.encode(), c, unblinded, unblinded[1:17]):
            assert needle not in wire


def test_a_frame_of_the_other_suites_group_is_refused_by_name():
    standard = list(PsiReceiver(["a", "b"]).request_frames())
    with pytest.raises(ProtocolError, match="Curve25519 .standard suite.* SM2 curve .gm suite.*disagree"):
        PsiSender(["a"], suite="gm").handle(standard[0])
    gm = list(PsiReceiver(["a", "b"], suite="gm").request_frames())
    with pytest.raises(ProtocolError, match="SM2 curve .gm suite.* Curve25519 .standard suite.*disagree"):
        PsiSender(["a"]).handle(gm[0])
    assert standard[0][4] == 2  # the standard suite's frames are still version 2, byte for byte


def test_an_off_curve_point_from_a_malicious_receiver_is_refused_before_the_senders_secret_touches_it():
    r = PsiReceiver(["a", "b"], suite="gm")
    frames = list(r.request_frames())
    bad = bytearray(frames[0])
    bad[HEADER + 33 : HEADER + 66] = b"\x02" + _off_curve_x().to_bytes(32, "big")  # an invalid-curve attack point
    s = PsiSender(["a", "secret-customer"], suite="gm")
    s.handle(bytes(bad))
    with pytest.raises(ProtocolError, match="position 1 is not on the curve sm2p256v1") as info:
        s.handle(frames[1])
    assert "secret" not in str(info.value)


def test_an_off_curve_point_from_a_malicious_sender_is_refused_by_the_receiver():
    r = PsiReceiver(["a", "b"], suite="gm", mode=Mode.TO_BOTH)
    s = PsiSender(["a"], suite="gm", mode=Mode.TO_BOTH)
    frames = list(r.request_frames())
    s.handle(frames[0])
    replies = s.handle(frames[1])
    evaluated = bytearray(replies[0])
    evaluated[HEADER : HEADER + 33] = b"\x00" * 33
    with pytest.raises(ProtocolError, match="position 0 is the point at infinity"):
        r.handle(bytes(evaluated))
    r = PsiReceiver(["a", "b"], suite="gm")  # and a SET element, which the receiver exponentiates
    s = PsiSender(["a"], suite="gm")
    frames = list(r.request_frames())
    s.handle(frames[0])
    replies = s.handle(frames[1])
    assert [decode(f, group=1).type for f in replies][2] is FrameType.SET
    bad = bytearray(replies[2])
    bad[HEADER : HEADER + 33] = b"\x03" + _off_curve_x().to_bytes(32, "big")
    with pytest.raises(ProtocolError, match="position 0 is not on the curve sm2p256v1"):
        for frame in [*replies[:2], bytes(bad), *replies[3:]]:
            r.handle(frame)
    assert not r.done


def test_gm_psi_across_worker_processes_matches_the_in_process_result():
    xs, ys = [f"acct-{i}" for i in range(600)], [f"ACCT-{i} " for i in range(400, 900)]
    with Workers(2) as workers:
        r, s = _run(xs, ys, Mode.TO_BOTH, workers=workers)
    assert r.positions.tolist() == list(range(400, 600)) and s.positions.tolist() == list(range(200))


# -- the anonymous query on the SM2 curve -------------------------------------------------------

LIST = [("LEI-0001", "high"), ("LEI-0002", "low"), ("lei-0003", "flag:sanctions")]


def _gm_holder():
    holder = ListHolder("hq-risk", MemoryQuota(100), suite="gm", label_width=16)
    return holder, holder.publish(LIST)


def test_gm_query_reads_the_labels_with_sm2_points_sm3_kdf_and_sm4_gcm():
    holder, table = _gm_holder()
    data = table.to_bytes()
    assert data[4] == 2 and table.suite == "gm"  # table format 2: the gm suite
    assert table.ciphertexts.shape == (3, 12 + 2 + 16 + 16)  # the suite's SM4-GCM seal: nonce, padded label, tag
    querier = Querier(data, suite="gm")
    pending = querier.ask(["lei-0002", "LEI-9999", " LEI-0001 "])
    assert decode(pending.request, group=1).elements.shape == (3, 33)
    assert pending.open(holder.answer("bank-a", pending.request)) == ["low", None, "high"]
    cts = np.array(table.ciphertexts)
    cts[:, 20] ^= 1
    forged = EncryptedTable(table.list_hash, table.epoch, table.label_width, table.tags, cts, "gm")
    pending = Querier(forged, suite="gm").ask(["LEI-0002"])
    with pytest.raises(ProtocolError, match="authentication"):
        pending.open(holder.answer("bank-a", pending.request))


def test_a_query_table_or_query_of_the_other_suite_is_refused_by_name():
    holder, table = _gm_holder()
    with pytest.raises(ProtocolError, match="under the gm crypto suite, this peer runs the standard suite"):
        Querier(table.to_bytes())
    standard = ListHolder("hq-risk", MemoryQuota(100), label_width=16)
    standard_table = standard.publish(LIST)
    with pytest.raises(ProtocolError, match="under the standard crypto suite, this peer runs the gm suite"):
        Querier(standard_table, suite="gm")
    request = Querier(standard_table).ask(["LEI-0001"]).request
    with pytest.raises(ProtocolError, match="Curve25519 .standard suite.*SM2 curve .gm suite"):
        holder.answer("bank-a", request)
    assert holder.quota.used("bank-a") == 0  # refused before anything was charged


def test_the_list_holder_refuses_an_off_curve_query_point():
    holder, table = _gm_holder()
    pending = Querier(table, suite="gm").ask(["LEI-0001"])
    bad = pending.request[:HEADER] + b"\x02" + _off_curve_x().to_bytes(32, "big")
    with pytest.raises(ProtocolError, match="not on the curve sm2p256v1"):
        holder.answer("bank-a", bad)


@pytest.mark.parametrize(
    "version,group,match",
    [
        (2, 1, "version 2 PSI frame has group byte 0"),  # version 2 had a reserved zero byte there
        (3, 7, "unknown group 7"),
        (4, 1, "version 4 is not supported"),
    ],
)
def test_frame_headers_with_a_wrong_version_or_group_byte_are_refused(version, group, match):
    frame = bytearray(next(iter(PsiReceiver(["a"], suite="gm").request_frames())))
    frame[4], frame[7] = version, group
    with pytest.raises(ProtocolError, match=match):
        decode(bytes(frame), group=1)


def test_the_gm_list_holder_sees_fresh_random_points_never_the_identifier_or_its_hash():
    """The holder's full view of a query: the request. Asking one identifier twice looks different."""
    _, table = _gm_holder()
    request = Querier(table, suite="gm").ask(["LEI-0001", "LEI-0001"]).request
    rows = decode(request, group=1).elements
    assert rows[0].tobytes() != rows[1].tobytes()
    form = canonical("LEI-0001", "id")
    unblinded = sm2.hash_to_curve([form], sm2.QUERY_DST)[0].tobytes()
    for needle in (b"LEI-0001", form, unblinded, unblinded[1:17], sm2.expand_message_xmd(form, sm2.QUERY_DST, 96)[:16]):
        assert needle not in request + table.to_bytes()


def test_the_standard_suites_table_entries_are_derived_as_before_hkdf_sha256_and_aes_gcm():
    """Format 1 tables must stay readable by peers of earlier releases: HKDF-SHA256 (no salt), 16 + 32 bytes."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from fedsilo.privacy.psi.query import _entry_keys

    elements = np.frombuffer(bytes(range(64)), np.uint8).reshape(2, 32)
    info = b"fedsilo/psi/v1/entry" + b"L" * 8 + (3).to_bytes(8, "big")
    expected = [HKDF(hashes.SHA256(), 48, None, info).derive(row.tobytes()) for row in elements]
    tags, keys = _entry_keys(elements, b"L" * 8, 3, "standard")
    assert [t + k for t, k in zip(tags, keys)] == expected
    gm_tags, gm_keys = _entry_keys(elements, b"L" * 8, 3, "gm")
    assert len(gm_keys[0]) == 16 and gm_tags != tags  # SM3 KDF, an SM4 key
    holder = ListHolder("hq", MemoryQuota(5))
    table = holder.publish([("LEI-1", "x")])
    assert table.to_bytes()[4] == 1 and table.ciphertexts.shape == (1, 2 + 32 + 16)
