"""PSI's group: hashing onto Curve25519 (never the twist), commutative blinding, refused elements."""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest

from fedsilo.errors import ProtocolError
from fedsilo.privacy.psi import Mode, PsiReceiver, PsiSender, x25519
from fedsilo.privacy.psi.identifiers import PSI_DOMAIN, digests
from fedsilo.privacy.psi.wire import HEADER

P = 2**255 - 19
A = 486662
# u-coordinates of the curve's points of order 4 and 8 (order 2 is u = 0).
SMALL_ORDER_ON_CURVE = [
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
]


def _on_curve(u: int) -> bool:
    return gmpy2.jacobi(u * (u * u + A * u + 1) % P, P) == 1


def _rows(*values: int) -> np.ndarray:
    return np.frombuffer(b"".join(v.to_bytes(32, "little") for v in values), np.uint8).reshape(-1, 32)


def _int(row: np.ndarray) -> int:
    return int.from_bytes(row.tobytes(), "little")


def _elligator(digest: bytes) -> tuple[int, int]:
    """RFC 9380's Elligator 2 for curve25519 (Z = 2) in plain Python: (u1, the chosen u)."""
    r = int.from_bytes(digest, "little") % P
    u1 = -A * pow(1 + 2 * r * r, P - 2, P) % P
    square = pow(u1 * (u1 * u1 + A * u1 + 1) % P, (P - 1) // 2, P) == 1  # Euler's criterion
    return u1, u1 if square else (-u1 - A) % P


def test_hash_is_elligator_2_and_lands_on_the_curve_even_when_u1_is_on_the_twist():
    d = digests([f"cust-{i}" for i in range(2000)], "id", PSI_DOMAIN)
    points = x25519.hash_onto_curve(d)
    assert all(0 < _int(row) < P and _on_curve(_int(row)) for row in points)
    x25519.check_elements(points)  # no refusal
    reference = [_elligator(row.tobytes()) for row in d[:300]]
    assert [_int(row) for row in points[:300]] == [u for _, u in reference]
    twisted = sum(not _on_curve(u1) for u1, _ in reference)
    assert 100 < twisted < 200  # about half the first candidates lie on the twist, and were not used
    assert np.array_equal(x25519.hash_onto_curve(d), points)  # deterministic
    assert np.array_equal(x25519.hash_onto_curve(d[7:9]), points[7:9])  # batch-independent
    assert len({row.tobytes() for row in points}) == 2000
    assert x25519.hash_onto_curve(d[:0]).shape == (0, 32)


def test_blinding_commutes_and_lands_in_the_prime_order_subgroup():
    points = x25519.hash_onto_curve(digests(["a", "b", "c"], "id", PSI_DOMAIN))
    a, b = x25519.random_scalar(), x25519.random_scalar()
    ab = x25519.multiply(x25519.multiply(points, a), b)
    assert np.array_equal(ab, x25519.multiply(x25519.multiply(points, b), a))
    assert not np.array_equal(ab, x25519.multiply(points, a))
    x25519.check_elements(ab)
    # Clamped scalars are multiples of the cofactor 8: the results have order ℓ, so a scalar
    # differing from ``a`` only in the clamped-away bits gives the same result.
    a2 = bytes([a[0] ^ 0x07]) + a[1:31] + bytes([a[31] ^ 0x80])
    assert np.array_equal(x25519.multiply(points, a2), x25519.multiply(points, a))


@pytest.mark.parametrize(
    "u,match",
    [
        (0, "small order"),  # the point of order 2, all-zero bytes
        (1, "small order"),  # order 4
        (SMALL_ORDER_ON_CURVE[1], "small order"),  # order 8
        (SMALL_ORDER_ON_CURVE[2], "small order"),
        (2, "twist"),  # on the twist
        (P - 1, "twist"),  # order 4 on the twist
        (P, "canonical"),  # u >= p, = 0 mod p
        (P + 1, "canonical"),  # u >= p, = 1 mod p
        (2**255 - 1, "canonical"),
        (9 + 2**255, "canonical"),  # the base point with the top bit set
    ],
)
def test_non_canonical_zero_and_twist_elements_are_refused(u, match):
    rows = _rows(9, 9, u)
    with pytest.raises(ProtocolError, match=match) as info:
        x25519.check_elements(rows, offset=100)
    assert "position 102" in str(info.value)


@pytest.mark.parametrize("u", [0, *SMALL_ORDER_ON_CURVE])
def test_small_order_points_of_the_curve_give_zero_and_are_refused_by_multiply_too(u):
    assert u == 0 or _on_curve(u)
    with pytest.raises(ProtocolError, match="position 1 is of small order"):
        x25519.multiply(_rows(9, u), x25519.random_scalar())  # X25519 maps them to zero


@pytest.mark.parametrize("u", [0, 2, P - 1, P, 9 + 2**255, *SMALL_ORDER_ON_CURVE])
def test_sender_refuses_bad_elements_before_answering_and_leaks_nothing(u):
    secret = "very-secret-customer"
    receiver = PsiReceiver(["a", "b"])
    frames = list(receiver.request_frames())
    bad = bytearray(frames[0])
    bad[HEADER + 32 : HEADER + 64] = u.to_bytes(32, "little")
    sender = PsiSender([secret])
    assert sender.handle(bytes(bad)) == []
    with pytest.raises(ProtocolError, match="position 1") as info:
        sender.handle(frames[1])
    message = str(info.value)
    assert secret not in message and "refused" in message
    assert not sender.done


@pytest.mark.parametrize("u,match", [(1, "small order"), (P + 3, "canonical")])
def test_receiver_refuses_badly_encoded_evaluated_elements(u, match):
    receiver = PsiReceiver(["a", "b"])
    sender = PsiSender(["a", "c"])
    replies = [reply for frame in receiver.request_frames() for reply in sender.handle(frame)]
    evaluated = bytearray(replies[0])
    evaluated[HEADER + 32 : HEADER + 64] = u.to_bytes(32, "little")
    with pytest.raises(ProtocolError, match=match):
        receiver.handle(bytes(evaluated))
    assert not receiver.done


def test_a_twist_point_the_receiver_only_compares_matches_nothing():
    """EVALUATED is never exponentiated: a twist point there is handled as documented (no match)."""
    receiver = PsiReceiver(["a", "b"])
    sender = PsiSender(["a", "b", "c"])
    replies = [reply for frame in receiver.request_frames() for reply in sender.handle(frame)]
    evaluated = bytearray(replies[0])
    evaluated[HEADER : HEADER + 32] = (2).to_bytes(32, "little")  # the first element, "a", on the twist
    for reply in [bytes(evaluated), *replies[1:]]:
        receiver.handle(reply)
    assert receiver.result().positions.tolist() == [1]  # "b" still matches; "a" matches nothing


def test_receiver_refuses_a_twist_point_in_the_senders_set():
    receiver = PsiReceiver(["a", "b"])
    sender = PsiSender(["a", "c"])
    replies = [reply for frame in receiver.request_frames() for reply in sender.handle(frame)]
    set_frame = bytearray(replies[2])  # EVALUATED, EVALUATED_END, SET, SET_END
    set_frame[HEADER : HEADER + 32] = (2).to_bytes(32, "little")
    receiver.handle(replies[0])
    receiver.handle(replies[1])
    receiver.handle(bytes(set_frame))
    with pytest.raises(ProtocolError, match="twist"):
        receiver.handle(replies[3])


@pytest.mark.parametrize("u,outcome", [(1, "small order"), (P + 3, "canonical")])
def test_the_sender_refuses_badly_encoded_confirm_elements(u, outcome):
    receiver = PsiReceiver(["a", "b"], mode=Mode.TO_BOTH)
    sender = PsiSender(["a", "b", "c"], mode=Mode.TO_BOTH)
    replies = [reply for frame in receiver.request_frames() for reply in sender.handle(frame)]
    confirms = [back for reply in replies for back in receiver.handle(reply)]
    frame = bytearray(confirms[0])
    frame[HEADER : HEADER + 32] = u.to_bytes(32, "little")
    with pytest.raises(ProtocolError, match=outcome):
        sender.handle(bytes(frame))
    assert not sender.done


def test_twist_points_the_sender_only_compares_match_nothing():
    """CONFIRM (both-sides mode) is never exponentiated: twist points there are handled as documented."""
    receiver = PsiReceiver(["a", "b"], mode=Mode.TO_BOTH)
    sender = PsiSender(["a", "b", "c"], mode=Mode.TO_BOTH)
    replies = [reply for frame in receiver.request_frames() for reply in sender.handle(frame)]
    confirms = [back for reply in replies for back in receiver.handle(reply)]
    frame = bytearray(confirms[0])
    frame[HEADER : HEADER + 3 * 32] = (2).to_bytes(32, "little") * 3  # every element on the twist
    for back in [bytes(frame), *confirms[1:]]:
        sender.handle(back)
    assert receiver.result().cardinality == 2 and sender.result().cardinality == 0
