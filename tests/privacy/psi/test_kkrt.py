"""OT-extension PSI (KKRT16): plaintext answers, every malformed frame refused, the receiver's view."""

from __future__ import annotations

import hashlib
import random
import struct

import numpy as np
import pytest

from fedsilo.errors import ProtocolError, PsiError, PsiFrameError
from fedsilo.privacy.psi import Mode, PsiReceiver, PsiSender, canonical, cuckoo, exchange, kkrt, ot
from fedsilo.privacy.psi.kkrt import KkrtReceiver, KkrtSender, _codewords, _oprf, item_digests, mask_bytes
from fedsilo.privacy.psi.otwire import HEADER, MAX_RECORDS, FrameType, decode, encode

from ._plaintext import (
    EDGE_CASES,
    assert_both_sides_match_plaintext,
    customers_and_their_wire,
    expected_positions,
    rand_ids,
)

MODES = [Mode.TO_RECEIVER, Mode.TO_BOTH]


def _run(xs, ys, mode, kind="id", tap=None):
    r = KkrtReceiver(xs, kind=kind, mode=mode)
    s = KkrtSender(ys, kind=kind, mode=mode)
    exchange(r, s, tap)
    return r.result(), s.result()


def _keys_by_identifier(result, items):
    return {canonical(items[p], "id"): bytes(k) for p, k in zip(result.positions.tolist(), result.shared_keys)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_plaintext_intersection_on_random_sets(seed):
    rng = random.Random(seed)
    pool = rand_ids(rng, 600)
    xs = rng.sample(pool, rng.randint(0, 400)) + rng.choices(pool, k=50)  # with repeats
    ys = rng.sample(pool, rng.randint(0, 400))
    r, s = _run(xs, ys, Mode.TO_BOTH)
    assert_both_sides_match_plaintext(r, s, xs, ys)
    # Both sides hold the same key for the same shared identifier, distinct across identifiers.
    assert _keys_by_identifier(r, xs) == _keys_by_identifier(s, ys)
    assert len(set(_keys_by_identifier(r, xs).values())) == r.cardinality


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("xs,ys", EDGE_CASES)
def test_edge_cases_in_each_mode(xs, ys, mode):
    r, s = _run(xs, ys, mode)
    expected = expected_positions(xs, ys)
    assert r.positions.tolist() == expected and r.cardinality == len(expected)
    assert r.own_size == s.peer_size == len({canonical(x, "id") for x in xs})
    assert r.peer_size == s.own_size == len({canonical(y, "id") for y in ys})
    if mode is Mode.TO_BOTH:
        assert s.positions.tolist() == expected_positions(ys, xs) and s.cardinality == len(expected)
    else:
        assert s.cardinality is None and s.positions is None and r.shared_keys is None


def test_many_frames_each_way():
    """Sets large enough for several MATRIX and MASKS frames, half shared."""
    n = 24000
    xs = [f"cust-{i}" for i in range(n)]
    ys = [f"cust-{i}" for i in range(n // 2, n + n // 2)]
    frames = []
    r, s = _run(xs, ys, Mode.TO_BOTH, tap=lambda d, f: frames.append(FrameType(f[5])))
    assert frames.count(FrameType.MATRIX) == -(-cuckoo.bins_for(n) // 8192) > 1
    assert frames.count(FrameType.MASKS) == -(-3 * n // MAX_RECORDS) > 1
    assert r.positions.tolist() == list(range(n // 2, n))
    assert s.positions.tolist() == list(range(n // 2))


def test_sender_prepares_its_set_before_the_request_and_reads_generators_once():
    s = KkrtSender((f"id-{i}" for i in range(0, 300, 3)), mode=Mode.TO_BOTH)
    s.prepare()
    r = KkrtReceiver((f"id-{i}" for i in range(200)), mode=Mode.TO_BOTH)
    exchange(r, s)
    assert r.result().positions.tolist() == list(range(0, 200, 3))
    assert s.result().positions.tolist() == list(range(67))


def test_kinds_separate_ids_from_names():
    r, _ = _run(["id:12345", "name:ACME"], ["name:12345", "name:acme"], Mode.TO_RECEIVER, kind=None)
    assert r.positions.tolist() == [1]


def test_cardinality_mode_is_refused_by_name():
    for side in (KkrtReceiver, KkrtSender):
        with pytest.raises(PsiError, match="cardinality.*DH protocol"):
            side(["a"], mode=Mode.CARDINALITY)


def test_mask_width_gives_40_bit_statistical_security():
    assert mask_bytes(0, 0) == 8
    assert mask_bytes(100_000, 100_000) == 10  # 40 + 34 bits
    assert mask_bytes(10_000_000, 10_000_000) == 11  # 40 + 47 bits
    for nx, ny in [(1, 1), (1000, 5), (10**6, 10**6), (10**7, 3 * 10**7)]:
        assert 8 * mask_bytes(nx, ny) >= 40 + np.log2(nx * ny)


def test_no_identifier_or_digest_on_the_wire():
    customers, wire = customers_and_their_wire(_run)
    for ident in customers:
        c = canonical(ident, "id")
        digest = item_digests([ident], "id")[0].tobytes()
        for needle in (ident.encode(), c, hashlib.sha256(c).digest()[:16], digest[:16], digest[:8]):
            assert needle not in wire


# --- the receiver's view: it cannot match an item of the sender it did not hold ----------------------


class _Spy:
    """Records what the receiver computes (its full knowledge), calling the real functions."""

    def __init__(self, monkeypatch):
        self.seeds, self.transposed = [], []
        real_seeds, real_transpose = ot.OtSender.seeds, ot.transpose

        def seeds(obj, replies):
            out = real_seeds(obj, replies)
            self.seeds.append(out)
            return out

        def transpose(matrix):
            self.transposed.append(matrix.copy())
            return real_transpose(matrix)

        monkeypatch.setattr(ot.OtSender, "seeds", seeds)
        monkeypatch.setattr(ot, "transpose", transpose)


def test_receiver_cannot_match_a_sender_item_it_did_not_hold(monkeypatch):
    """The receiver knows every seed it sent, every row t_j and codeword of every bin (empty ones too),
    the code and bin keys and all masks. For each item y of the sender it did NOT hold (it even
    guesses y itself), it tries every mask it can compute for y: from each bin y hashes to, with the
    sender's secret s guessed as all zeros, all ones, or arbitrary bits. None is among the masks that
    its honest outputs do not explain; with the true s the same computation finds every one (so the
    attack code is right)."""
    spy = _Spy(monkeypatch)
    xs = [f"held-{i}" for i in range(300)] + [f"both-{i}" for i in range(100)]
    ys = [f"both-{i}" for i in range(100)] + [f"other-{i}" for i in range(200)]
    r, s = KkrtReceiver(xs), KkrtSender(ys)
    frames = []
    exchange(r, s, lambda d, f: frames.append(f))
    hello = decode(frames[0], {FrameType.HELLO: 64}).payload
    reply = decode(frames[1], {FrameType.REPLY: 16 + 8 + 512 * 32}).payload
    _, bin_key, _, bins = struct.unpack(">32s16sQQ", bytes(hello))
    code_key = bytes(reply[:16])
    width = mask_bytes(len(xs), len(ys))
    masks = np.concatenate(
        [
            np.frombuffer(decode(f, {FrameType.MASKS: width}).payload, np.uint8).reshape(-1, width)
            for f in frames
            if f[5] == FrameType.MASKS
        ]
    ).reshape(3, len(ys), width)
    (zero, _one), codes = spy.seeds[0], spy.transposed[0]  # codes: (bins, 64), one codeword per bin
    t = ot.transpose(np.stack([ot.prg(seed, bins // 8) for seed in zero]))  # the receiver's t_j, every bin
    assert len(codes) == bins and len(t) == bins

    honest = {row.tobytes() for row in _oprf(t, width)}  # its outputs over every bin, occupied or not

    def attack(guess_s, items):
        """Guessed masks of ``items`` found among the masks that match none of the honest outputs."""
        d = item_digests(items, "id")
        where = cuckoo.bin_indices(bin_key, d, bins)
        hits = 0
        for i in range(3):
            code = _codewords(code_key, d, np.full(len(d), i, dtype=np.uint8))
            j = where[:, i]
            guess = _oprf(t[j] ^ ((codes[j] ^ code) & guess_s), width)
            pool = {row.tobytes() for row in masks[i]} - honest
            hits += sum(row.tobytes() in pool for row in guess)
        return hits

    outsiders = ys[100:]
    for guess_s in (np.zeros(64, np.uint8), np.full(64, 255, np.uint8), np.frombuffer(bytes(range(64)), np.uint8)):
        assert attack(guess_s, outsiders) == 0
    assert attack(s._s, outsiders) == 3 * len(outsiders)  # all three masks of each: the secret s protects them
    # Its honest outputs over every bin, occupied or not, match the shared items only.
    assert len(honest & {m.tobytes() for m in masks.reshape(-1, width)}) == 100
    assert r.result().cardinality == 100


def test_sender_cannot_tell_which_items_the_receiver_holds(monkeypatch):
    """The sender knows the matrix U, the seed it chose of each pair, its secret s, the code and bin
    keys. For an item the receiver holds, the best it can do is strip its own seeds' pads and compare
    what is left in each of the item's three bins with the item's codeword: the other pad (a seed it
    never saw) leaves about half the 512 bits agreeing, as for an item the receiver does not hold.
    With both seeds of each pair (the receiver's knowledge) the same comparison finds every codeword."""
    spy = _Spy(monkeypatch)
    held = [f"held-{i}" for i in range(300)]
    absent = [f"absent-{i}" for i in range(300)]
    frames = []
    r, s = KkrtReceiver(held), KkrtSender(["x"])
    exchange(r, s, lambda d, f: frames.append(f))
    _, bin_key, _, bins = struct.unpack(">32s16sQQ", bytes(decode(frames[0], {FrameType.HELLO: 64}).payload))
    code_key = bytes(decode(frames[1], {FrameType.REPLY: 16 + 8 + 512 * 32}).payload[:16])
    u = np.concatenate(
        [
            np.frombuffer(decode(f, {FrameType.MATRIX: 64}).payload, np.uint8).reshape(512, -1)
            for f in frames
            if f[5] == FrameType.MATRIX
        ],
        axis=1,
    )
    own_pads = np.stack([ot.prg(seed, bins // 8) for seed in s._seeds])

    def best_agreement(view_columns, items):
        """Per item, the largest fraction of its codeword's bits found in one of its bins."""
        rows = ot.transpose(view_columns)
        d = item_digests(items, "id")
        where = cuckoo.bin_indices(bin_key, d, bins)
        best = np.zeros(len(items))
        for i in range(3):
            code = _codewords(code_key, d, np.full(len(d), i, dtype=np.uint8))
            same = np.unpackbits(~(rows[where[:, i]] ^ code), axis=1).mean(axis=1)
            best = np.maximum(best, same)
        return best

    sender_view = u ^ own_pads
    assert best_agreement(sender_view, held).max() < 0.65
    assert best_agreement(sender_view, absent).max() < 0.65
    assert abs(best_agreement(sender_view, held).mean() - best_agreement(sender_view, absent).mean()) < 0.02
    zero, one = spy.seeds[0]
    both_pads = np.stack([ot.prg(a, bins // 8) ^ ot.prg(b, bins // 8) for a, b in zip(zero, one)])
    assert (best_agreement(u ^ both_pads, held) == 1.0).all()  # U minus both pads is the codeword matrix


def test_sender_sees_a_pseudorandom_matrix():
    """The sender's view of the receiver's codewords is U = G(k_0) + G(k_1) + D: for each column it
    holds one seed only. Two runs of the same receiver set give unrelated matrices, and the matrix is
    balanced (about half ones), so nothing of the bins shows."""
    views = []
    for _ in range(2):
        frames = []
        _run(["a", "b", "c"] * 10, ["a"], Mode.TO_RECEIVER, tap=lambda d, f, frames=frames: frames.append(f))
        views.append(b"".join(bytes(decode(f, {FrameType.MATRIX: 64}).payload) for f in frames if f[5] == 3))
    a, b = (np.unpackbits(np.frombuffer(v, np.uint8)) for v in views)
    assert len(a) == len(b) == 512 * cuckoo.bins_for(3)
    assert 0.45 < a.mean() < 0.55 and 0.45 < (a ^ b).mean() < 0.55


# --- frames: every malformed one refused with PsiFrameError, saying what was wrong ---------------------


def _hello(xs=("a", "b", "c"), mode=Mode.TO_RECEIVER):
    r = KkrtReceiver(list(xs), mode=mode)
    return r, next(iter(r.request_frames()))


def _flip(frame, at, value):
    return frame[:at] + bytes([value]) + frame[at + 1 :]


@pytest.mark.parametrize(
    "corrupt,match",
    [
        (lambda f: f[: HEADER - 1], "at least 32 bytes"),
        (lambda f: b"XXXX" + f[4:], "wrong magic"),
        (lambda f: b"FPSI" + f[4:], "DH-PSI frame: the peer runs the DH protocol"),
        (lambda f: _flip(f, 4, 2), "version 2 is not supported"),
        (lambda f: _flip(f, 5, 99), "unknown OT-PSI frame type 99"),
        (lambda f: _flip(f, 5, FrameType.MASKS), "MASKS frame arrived out of order"),
        (lambda f: _flip(f, 7, 1), "flags must be 0"),
        (lambda f: f[:-1], "announces 1 records but carries 63 bytes"),  # truncated
        (lambda f: f + b"\x00", "announces 1 records but carries 65 bytes"),  # oversized
        (lambda f: f[:28] + struct.pack(">I", 2) + f[32:] + f[32:], "HELLO carries one record"),
        (lambda f: _flip(f, 6, Mode.TO_BOTH), "mode TO_BOTH, this side in TO_RECEIVER"),
        (lambda f: _flip(f, 6, 9), "mode 9"),
        (lambda f: f[: HEADER + 63] + b"\x40" + f[HEADER + 64 :], "announces 3 items in 64 bins; .* uses 128"),
        (lambda f: f[: HEADER + 48] + b"\xff" * 8 + f[HEADER + 56 :], "announces 18446744073709551615 items"),
        (lambda f: f[:HEADER] + b"\x00" * 32 + f[HEADER + 32 :], "not a valid ristretto255 point"),
    ],
)
def test_malformed_hello_is_refused(corrupt, match):
    _, hello = _hello()
    sender = KkrtSender(["a", "x"])
    with pytest.raises(PsiFrameError, match=match):
        sender.handle(corrupt(hello))
    assert not sender.done


def test_each_protocol_refuses_the_others_frames_by_name():
    _, hello = _hello()
    with pytest.raises(ProtocolError, match="OT-extension PSI frame: the peer runs the OT protocol"):
        PsiSender(["a"]).handle(hello)
    dh_request = next(iter(PsiReceiver(["a"]).request_frames()))
    with pytest.raises(PsiFrameError, match="DH-PSI frame: the peer runs the DH protocol"):
        KkrtSender(["a"]).handle(dh_request)
    r, _ = _hello()
    with pytest.raises(PsiError, match="already sent its request"):
        next(iter(r.request_frames()))


def test_frame_errors_are_protocol_and_psi_errors():
    with pytest.raises(ProtocolError):
        KkrtSender(["a"]).handle(b"short")
    with pytest.raises(PsiError):
        KkrtSender(["a"]).handle(b"short")


def _through_reply(xs=("a", "b", "c"), ys=("a", "x"), mode=Mode.TO_RECEIVER):
    r, hello = _hello(xs, mode)
    s = KkrtSender(list(ys), mode=mode)
    (reply,) = s.handle(hello)
    return r, s, reply


@pytest.mark.parametrize(
    "corrupt,match",
    [
        (lambda f: f[:-1], "REPLY frame announces 1 records but carries"),
        (lambda f: f + b"\x00" * 32, "REPLY frame announces 1 records but carries"),
        (lambda f: f[:12] + b"\x00" * 16 + f[28:], "another session"),
        (lambda f: f[: HEADER + 16] + b"\xff" * 8 + f[HEADER + 24 :], "announces .* items, more than"),
        (lambda f: f[: HEADER + 24] + b"\x00" * 32 + f[HEADER + 56 :], "base-OT point 0 is not a valid"),
        (lambda f: f[: HEADER + 24 + 32 * 7] + b"\xff" * 32 + f[HEADER + 24 + 32 * 8 :], "base-OT point 7"),
    ],
)
def test_malformed_reply_is_refused(corrupt, match):
    r, _, reply = _through_reply()
    with pytest.raises(PsiFrameError, match=match):
        r.handle(corrupt(reply))
    assert not r.done


def test_frames_out_of_order_or_after_the_end_are_refused():
    r = KkrtReceiver(["a"])
    with pytest.raises(PsiFrameError, match="before the request was sent"):
        r.handle(b"\x00" * 64)
    r, s, reply = _through_reply()
    matrix = r.handle(reply)
    with pytest.raises(PsiFrameError, match="MATRIX_END frame arrived out of order"):
        KkrtSender(["a"]).handle(matrix[-1])
    with pytest.raises(PsiFrameError, match="REPLY frame arrived out of order"):
        r.handle(reply)  # a second REPLY
    with pytest.raises(PsiFrameError, match="MATRIX_END frame 5 arrived out of order"):
        s.handle(matrix[-1][:24] + struct.pack(">I", 5) + matrix[-1][28:])
    r, s, reply = _through_reply()
    matrix = r.handle(reply)
    masks = [out for frame in matrix for out in s.handle(frame)]
    assert s.done
    with pytest.raises(PsiFrameError, match="after the run ended"):
        s.handle(matrix[0])
    for frame in masks:
        r.handle(frame)
    with pytest.raises(PsiFrameError, match="after the run ended"):
        r.handle(masks[-1])


def test_wrong_totals_and_sizes_in_streams_are_refused():
    r, s, reply = _through_reply()
    matrix = r.handle(reply)
    end = decode(matrix[-1], {FrameType.MATRIX_END: 0})
    with pytest.raises(PsiFrameError, match="MATRIX stream ended with 128 records announced and 0 sent"):
        s.handle(matrix[-1][:24] + struct.pack(">I", 0) + matrix[-1][28:])  # END without the matrix
    r, s, reply = _through_reply()
    matrix = r.handle(reply)
    with pytest.raises(PsiFrameError, match="a multiple of 64 bins"):
        s.handle(encode(FrameType.MATRIX, Mode.TO_RECEIVER, r.session, 0, 8, bytes(512)))
    s.handle(matrix[0])
    with pytest.raises(PsiFrameError, match="more than the .* records expected"):
        s.handle(encode(FrameType.MATRIX, Mode.TO_RECEIVER, r.session, 1, 64, bytes(64 * 64)))
    assert end.count == cuckoo.bins_for(3)
    # The receiver refuses masks of the wrong width, and a wrong MASKS total.
    r, s, reply = _through_reply()
    masks = [out for frame in r.handle(reply) for out in s.handle(frame)]
    body = decode(masks[0], {FrameType.MASKS: 8}).payload
    with pytest.raises(PsiFrameError, match="MASKS frame announces 6 records but carries 47 bytes"):
        r.handle(masks[0][:-1])
    with pytest.raises(PsiFrameError, match="MASKS stream ended with 5 records announced and 6 sent, 6 expected"):
        r.handle(masks[0])
        r.handle(masks[1][:28] + struct.pack(">I", 5))
    assert len(body) == 6 * 8 and not r.done


def test_found_positions_from_a_deviating_receiver_are_refused():
    def sender_awaiting_found():
        r, s, reply = _through_reply(["a", "b"], ["a", "b", "c"], Mode.TO_BOTH)
        for frame in r.handle(reply):
            s.handle(frame)
        return r, s

    def found(r, s, rows):
        s.handle(encode(FrameType.FOUND, Mode.TO_BOTH, r.session, 0, len(rows), np.array(rows, ">u8").tobytes()))
        s.handle(encode(FrameType.FOUND_END, Mode.TO_BOTH, r.session, 1, len(rows)))

    for rows, match in [([2, 1], "increase strictly"), ([1, 1], "at most|increase strictly"), ([9], "below 9")]:
        r, s = sender_awaiting_found()
        with pytest.raises(PsiFrameError, match=match):
            found(r, s, rows)
        assert not s.done
    r, s = sender_awaiting_found()
    item = int(s._perms[0][0])  # the test reads the sender's shuffle to aim at one item twice
    with pytest.raises(PsiFrameError, match="names one identifier twice"):
        found(r, s, [0, 3 + int(np.nonzero(s._perms[1] == item)[0][0])])
    r, s = sender_awaiting_found()
    with pytest.raises(PsiFrameError, match="FOUND frame announces 4 records but carries 8 bytes"):
        s.handle(encode(FrameType.FOUND, Mode.TO_BOTH, r.session, 0, 4, bytes(8)))
    with pytest.raises(PsiFrameError, match="carries more than the 2 records expected"):
        s.handle(encode(FrameType.FOUND, Mode.TO_BOTH, r.session, 0, 3, bytes(24)))
    r, s = sender_awaiting_found()
    found(r, s, [])  # an empty intersection is a valid answer
    assert s.result().cardinality == 0 and s.result().positions.tolist() == []


# --- building blocks --------------------------------------------------------------------------------


def test_transpose_matches_a_bitwise_reference():
    rng = np.random.default_rng(0)
    for rows, cols in [(64, 8), (512, 24), (128, 64), (64, 1024)]:
        matrix = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
        bits = np.unpackbits(matrix, axis=1, bitorder="little")
        assert (ot.transpose(matrix) == np.packbits(bits.T, axis=1, bitorder="little")).all()
    with pytest.raises(ValueError):
        ot.transpose(np.zeros((56, 8), np.uint8))
    with pytest.raises(ValueError):
        ot.transpose(np.zeros((64, 7), np.uint8))


def test_base_ot_gives_the_chosen_seed_only():
    choices = np.array([0, 1, 1, 0, 1], dtype=np.uint8)
    sender = ot.OtSender()
    receiver = ot.OtReceiver(sender.first, choices)
    zero, one = sender.seeds(receiver.replies)
    for i, c in enumerate(choices):
        assert receiver.seeds[i] == (one if c else zero)[i] != (zero if c else one)[i]
    assert len(set(zero) | set(one)) == 10  # all seeds differ


def test_cuckoo_places_every_item_in_one_of_its_bins():
    rng = np.random.default_rng(1)
    for n in (0, 1, 5, 1000, 20000):
        bins = cuckoo.bins_for(n)
        candidates = cuckoo.bin_indices(b"k" * 16, rng.integers(0, 256, (n, 16), dtype=np.uint8), bins)
        occupant, which = cuckoo.place(candidates, bins)
        used = occupant >= 0
        assert used.sum() == n and len(set(occupant[used].tolist())) == n
        assert (candidates[occupant[used], which[used]] == np.nonzero(used)[0]).all()
    assert cuckoo.place(np.zeros((3, 3), np.int64), 2) is None  # three items, two bins: no placement


# --- chunked processing -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_results_are_identical_across_chunk_sizes(monkeypatch, mode):
    """The OT extension, the sender's rows and masks and the receiver's look-ups run CHUNK at a time; any
    chunk (a multiple of 64 bins, one bin-frame or many, masks straddling the hash functions' groups)
    gives the same intersection, sizes and, on both sides, the same keys as one chunk for everything."""
    rng = random.Random(5)
    pool = rand_ids(rng, 1500)
    xs = rng.sample(pool, 800) + rng.choices(pool, k=50)
    ys = rng.sample(pool, 900)
    answers = []
    for chunk in (64, 192, 8192, 1 << 16):
        monkeypatch.setattr(kkrt, "CHUNK", chunk)
        frames: list[FrameType] = []
        r, s = _run(xs, ys, mode, tap=lambda d, f, frames=frames: frames.append(FrameType(f[5])))
        assert r.positions.tolist() == expected_positions(xs, ys)
        if mode is Mode.TO_BOTH:
            assert_both_sides_match_plaintext(r, s, xs, ys)
            assert _keys_by_identifier(r, xs) == _keys_by_identifier(s, ys)
        answers.append((r.cardinality, r.own_size, r.peer_size, s.own_size, s.peer_size, s.cardinality))
        assert frames.count(FrameType.MATRIX) == -(-cuckoo.bins_for(r.own_size) // min(chunk, 8192))
    assert len(set(answers)) == 1


def test_chunked_sender_accepts_matrix_frames_of_any_allowed_size(monkeypatch):
    """The sender expands rows as MATRIX frames arrive, whatever multiples of 64 bins they carry (a
    receiver with another CHUNK cuts them differently): the answer is the same."""
    xs, ys = [f"c-{i}" for i in range(900)], [f"c-{i}" for i in range(450, 1350)]
    monkeypatch.setattr(kkrt, "CHUNK", 64)
    r = KkrtReceiver(xs)
    (hello,) = r.request_frames()
    monkeypatch.setattr(kkrt, "CHUNK", 1 << 16)
    s = KkrtSender(ys)
    (reply,) = s.handle(hello)
    monkeypatch.setattr(kkrt, "CHUNK", 64)
    matrix = r.handle(reply)
    assert len(matrix) == cuckoo.bins_for(900) // 64 + 1
    monkeypatch.setattr(kkrt, "CHUNK", 320)  # the sender expands in uneven pieces
    masks = [out for frame in matrix for out in s.handle(frame)]
    for frame in masks:
        r.handle(frame)
    assert r.result().positions.tolist() == list(range(450, 900))


def test_a_mask_before_the_receiver_finished_its_matrix_is_refused():
    """stream() yields the MATRIX frames lazily; a MASKS frame passed before that iterator ran out finds
    the receiver without its outputs and is refused (never looked up against half a table)."""
    r, s, reply = _through_reply(["a", "b", "c"], ["a", "x"])
    matrix_stream = r.stream(reply)
    first = next(matrix_stream)
    for frame in [first, *matrix_stream]:
        masks = s.handle(frame)
    r2, s2, reply2 = _through_reply(["a", "b", "c"], ["a", "x"])
    lazy = r2.stream(reply2)
    frames = [next(lazy), next(lazy)]  # the MATRIX frame and MATRIX_END: the outputs not yet computed
    answer = [out for frame in frames for out in s2.handle(frame)]
    with pytest.raises(PsiFrameError, match="before the state it needs"):
        r2.handle(answer[0])
    for frame in masks:
        r.handle(frame)
    assert r.result().positions.tolist() == [0]


def test_prg_slices_equal_the_whole_stream():
    seed = bytes(range(16))
    whole = ot.prg(seed, 1000)
    for offset, size in [(0, 1000), (16, 64), (8, 24), (5, 3), (992, 8), (0, 0)]:
        assert (ot.prg(seed, size, offset) == whole[offset : offset + size]).all()


def test_the_order_of_the_masks_does_not_follow_their_bins(monkeypatch):
    """The sender computes each mask when the chunk holding its bin arrives, but sends all of them in the
    shuffled order after MATRIX_END. The receiver, which knows the bin of each of its own items, sees
    where each matched mask sits in the stream: those positions are uncorrelated with the bins (an
    arrival-order sender would give a correlation of 1 and tell the receiver the bins of every item)."""
    monkeypatch.setattr(kkrt, "CHUNK", 512)
    n = 2000
    r, s = KkrtReceiver([f"c-{i}" for i in range(n)]), KkrtSender([f"c-{i}" for i in range(n)])
    exchange(r, s)
    matched = r._match >= 0
    assert matched.sum() == n
    bins = cuckoo.bin_indices(r._bin_key, r._own, r._bins)[r._items, r._functions]
    for i in range(3):
        mine = matched & (r._functions == i)
        position = r._match[mine] - i * n
        assert mine.sum() > 300 and abs(np.corrcoef(bins[mine], position)[0, 1]) < 0.2
