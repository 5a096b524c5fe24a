"""DH-PSI: correctness against the plaintext intersection, what crosses the wire, bad frames."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from fedsilo.errors import ProtocolError
from fedsilo.privacy.psi import Mode, PsiReceiver, PsiSender, Workers, canonical, exchange, x25519
from fedsilo.privacy.psi.identifiers import PSI_DOMAIN, digests
from fedsilo.privacy.psi.wire import HEADER, FrameType, decode, encode

from ._plaintext import (
    EDGE_CASES,
    assert_both_sides_match_plaintext,
    customers_and_their_wire,
    expected_positions,
    rand_ids,
)


def _run(xs, ys, mode, kind="id", workers=None, tap=None):
    r = PsiReceiver(xs, kind=kind, mode=mode, workers=workers)
    s = PsiSender(ys, kind=kind, mode=mode, workers=workers)
    exchange(r, s, tap)
    return r.result(), s.result()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_plaintext_intersection_on_random_sets(seed):
    rng = random.Random(seed)
    pool = rand_ids(rng, 400)
    xs, ys = rng.sample(pool, rng.randint(0, 300)), rng.sample(pool, rng.randint(0, 300))
    r, s = _run(xs, ys, Mode.TO_BOTH)
    assert_both_sides_match_plaintext(r, s, xs, ys)


@pytest.mark.parametrize("xs,ys", EDGE_CASES)
def test_adversarial_inputs(xs, ys):
    for mode in Mode:
        r, s = _run(xs, ys, mode)
        expected = expected_positions(xs, ys)
        assert r.cardinality == len(expected)
        assert r.own_size == len({canonical(x, "id") for x in xs})
        assert s.peer_size == r.own_size
        if mode is Mode.CARDINALITY:
            assert r.positions is None and s.positions is None
        else:
            assert r.positions.tolist() == expected
        if mode is Mode.TO_BOTH:
            assert s.positions.tolist() == expected_positions(ys, xs)
        else:
            assert s.cardinality is None and s.positions is None


def test_kinds_separate_ids_from_names():
    r, _ = _run(["id:12345", "name:ACME"], ["name:12345", "name:acme"], Mode.TO_RECEIVER, kind=None)
    assert r.positions.tolist() == [1]


def test_no_identifier_or_plain_hash_on_the_wire():
    customers, wire = customers_and_their_wire(_run)
    for ident in customers:
        c = canonical(ident, "id")
        digest = digests([ident], "id", PSI_DOMAIN)
        unblinded = x25519.hash_onto_curve(digest)[0].tobytes()  # H(id) before any secret exponent
        for needle in (
            ident.encode(),
            c,
            hashlib.sha256(c).digest(),
            hashlib.sha256(ident.encode()).digest(),
            hashlib.sha512(c).digest()[:32],
            digest[0, :32].tobytes(),
            digest[0, 32:].tobytes(),
            unblinded,
            unblinded[:16],
        ):
            assert needle not in wire


def test_cardinality_mode_shuffles_evaluations():
    xs = [f"c{i}" for i in range(200)]
    r = PsiReceiver(xs, mode=Mode.CARDINALITY)
    s = PsiSender(xs[:100], mode=Mode.CARDINALITY)
    request = list(r.request_frames())
    replies = [f for frame in request for f in s.handle(frame)]
    evaluated = decode(replies[0]).elements
    # Apply the receiver's view: in order, the first 100 would match; shuffled, they are spread out.
    for frame in replies:
        r.handle(frame)
    assert r.result().cardinality == 100 and r.result().positions is None
    ours = np.array(r._double)  # what the receiver compares, in the order it was received
    peer = set(
        bytes(row)
        for row in x25519.multiply(
            np.concatenate([decode(f).elements for f in replies if decode(f).type is FrameType.SET]), r._key
        )
    )
    hits = [i for i, row in enumerate(ours) if bytes(row) in peer]
    assert len(hits) == 100 and hits != list(range(100))
    assert len(evaluated) == 200


def _request(xs, mode=Mode.TO_RECEIVER):
    r = PsiReceiver(xs, mode=mode)
    return r, list(r.request_frames())


@pytest.mark.parametrize(
    "corrupt,match",
    [
        (lambda f: f[: HEADER - 1], "at least"),
        (lambda f: b"XXXX" + f[4:], "magic"),
        (lambda f: f[:4] + b"\x07" + f[5:], "version 7 is not supported"),
        (lambda f: f[:4] + b"\x01" + f[5:], "version 1 .ristretto255 PSI elements.* no longer accepts"),
        (lambda f: f[:-1], "announces"),  # wrong length
        (lambda f: f + b"\x00" * 32, "announces"),
        (lambda f: f[:HEADER] + b"\x00" * 32 + f[HEADER + 32 :], "small order"),  # zero
        (lambda f: f[:HEADER] + b"\xff" * 32 + f[HEADER + 32 :], "canonical"),  # top bit set, >= p
        (lambda f: f[:HEADER] + bytes([2] + [0] * 31) + f[HEADER + 32 :], "twist"),  # u = 2: on the twist
        (lambda f: f[:HEADER] + bytes([1] + [0] * 31) + f[HEADER + 32 :], "small order"),  # u = 1: order 4
    ],
)
def test_malformed_frames_are_refused(corrupt, match):
    _, frames = _request(["a", "b", "c"])
    sender = PsiSender(["a", "x"])
    with pytest.raises(ProtocolError, match=match):
        sender.handle(corrupt(frames[0]))
        sender.handle(frames[1])


def test_invalid_element_from_the_sender_is_refused_by_the_receiver():
    r, frames = _request(["a", "b"])
    s = PsiSender(["a"])
    s.handle(frames[0])
    replies = s.handle(frames[1])
    bad = bytearray(replies[0])
    bad[HEADER : HEADER + 32] = b"\x00" * 32
    with pytest.raises(ProtocolError, match="small order"):
        r.handle(bytes(bad))
    assert not r.done


def test_errors_do_not_leak_the_holders_list():
    secret = "very-secret-customer"
    _, frames = _request(["a"])
    s = PsiSender([secret])
    bad = frames[0][:HEADER] + b"\xff" * 32
    with pytest.raises(ProtocolError) as info:
        s.handle(bad)
        s.handle(frames[1])
    assert secret not in str(info.value)


def test_mode_mismatch_wrong_order_and_repeats_are_refused():
    _, frames = _request(["a"], Mode.TO_BOTH)
    with pytest.raises(ProtocolError, match="mode"):
        PsiSender(["a"], mode=Mode.TO_RECEIVER).handle(frames[0])
    _, frames = _request(["a", "b"])
    with pytest.raises(ProtocolError, match="out of order"):
        s = PsiSender(["a"])
        s.handle(frames[0])
        s.handle(frames[0])
    r, frames = _request(["a", "b"])
    row = decode(frames[0]).elements
    twice = encode(FrameType.BLINDED, Mode.TO_RECEIVER, r.session, 0, np.vstack([row[:1], row[:1]]))
    s = PsiSender(["a"])
    s.handle(twice)
    with pytest.raises(ProtocolError, match="repeated"):
        s.handle(encode(FrameType.BLINDED_END, Mode.TO_RECEIVER, r.session, 1, total=2))


@pytest.mark.slow
def test_streams_on_two_processes_match_in_process_result():
    """Generators in, batches across a 2-process pool and several frames: same answer."""
    xs = (f"acct-{i}" for i in range(12_000))
    ys = (f"ACCT-{i} " for i in range(9_000, 20_000))
    with Workers(2) as workers:
        r, s = _run(xs, ys, Mode.TO_BOTH, workers=workers)
    assert r.cardinality == s.cardinality == 3_000
    assert r.positions.tolist() == list(range(9_000, 12_000))
    assert s.positions.tolist() == list(range(0, 3_000))


def test_distinct_and_membership_compare_full_rows_when_prefixes_agree():
    from fedsilo.privacy.psi.protocol import _distinct, _member

    rows = np.zeros((5, 32), np.uint8)
    rows[:, 8] = [1, 2, 1, 3, 2]  # one 8-byte prefix, three distinct rows
    distinct, first = _distinct(rows)
    assert first.tolist() == [0, 1, 3] and np.array_equal(distinct, rows[[0, 1, 3]])
    pool = np.zeros((2, 32), np.uint8)
    pool[:, 8] = [2, 9]
    assert _member(rows, pool).tolist() == [False, True, False, False, True]
    assert _member(rows, pool[1:]).tolist() == [False] * 5  # one prefix per pool row: the fast path
    assert _member(rows, pool[:1]).tolist() == [False, True, False, False, True]
