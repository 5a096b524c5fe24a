"""Shared customers get one train/test side at every institution, agreed by PSI (issue 6, item 4)."""

import hashlib

import numpy as np
import pytest

from fedsilo.errors import DataError, ProtocolError
from fedsilo.peers.data.bank import FREE, TEST, TRAIN, split_train_test
from fedsilo.peers.shared_holdout import HoldoutMember, agree_holdout, pin_frame, read_pin_frame
from fedsilo.privacy.psi import canonical


def _institutions(seed=0):
    """Three institutions over 1,500 customers: some at two of them, some at all three."""
    rng = np.random.default_rng(seed)
    label = rng.random(1500) < 0.25
    holders = [
        set(range(0, 750)),
        set(range(600, 1200)),
        set(range(1100, 1500)) | set(range(0, 75)) | set(range(700, 750)),
    ]
    # shared by two: 600..699, 0..74, 1100..1199; by all three: 700..749
    ids, labels = [], []
    for i, rows in enumerate(holders):
        rows = rng.permutation(sorted(rows))
        spell = (lambda r: f"CUST-{r:05d}") if i != 1 else (lambda r: f"  cust-{r:05d} ")  # other spelling
        ids.append([spell(r) for r in rows])
        labels.append(label[rows].astype(np.float32))
    return ids, labels


def _customer(identifier):
    return int(identifier.strip()[5:])


def test_every_shared_customer_has_one_side_at_all_its_institutions():
    ids, labels = _institutions()
    agreement = agree_holdout(ids, labels, 0.2, seed=3, kind="customer")
    assert [(p.low, p.high, p.shared) for p in agreement.pairs] == [(0, 1, 150), (0, 2, 125), (1, 2, 150)]
    sides: dict[int, set[int]] = {}
    for own, own_sides in zip(ids, agreement.sides):
        for identifier, side in zip(own, own_sides):
            sides.setdefault(_customer(identifier), set()).add(int(side))
    assert all(len(s) == 1 for s in sides.values())  # checked against the plaintext ids
    for pair in agreement.pairs:  # the pairs' common order names the same customers
        low = [_customer(ids[pair.low][r]) for r in pair.rows_low]
        assert low == [_customer(ids[pair.high][r]) for r in pair.rows_high]
    for own_labels, own_sides in zip(labels, agreement.sides):  # still ~the test fraction in each class
        for value in (0.0, 1.0):
            assert abs((own_sides[own_labels == value] == TEST).mean() - 0.2) < 0.03
    again = agree_holdout(ids, labels, 0.2, seed=3, kind="customer")  # fresh PSI keys, same split
    assert all(np.array_equal(a, b) for a, b in zip(agreement.sides, again.sides))


def test_without_shared_customers_each_split_is_the_usual_one():
    ids, labels = _institutions()
    apart = [ids[0][:100], [f"other-{i}" for i in range(80)]]
    agreement = agree_holdout(apart, [labels[0][:100], labels[1][:80]], 0.2, seed=1)
    assert [p.shared for p in agreement.pairs] == [0]
    for own_labels, own_sides in zip([labels[0][:100], labels[1][:80]], agreement.sides):
        assert np.array_equal(np.flatnonzero(own_sides == TEST), split_train_test(own_labels, 0.2, 1)[1])


def test_no_identifier_crosses_between_institutions():
    ids, labels = _institutions(1)
    ids, labels = [own[:300] for own in ids], [own[:300] for own in labels]  # some shared, a quick search
    wire: list[bytes] = []
    agree_holdout(ids, labels, 0.2, seed=0, kind="customer", wire=wire.append)
    assert len(wire) > 6
    blob = b"".join(wire)
    for identifier in {x for own in ids for x in own}:
        form = canonical(identifier, "customer")
        for needle in (
            identifier.strip().encode(),
            identifier.strip().lower().encode(),
            form,
            hashlib.sha256(form).digest()[:16],
            hashlib.sha512(form).digest()[:16],
        ):
            assert needle not in blob, identifier


def test_pins_are_kept_and_the_rest_make_up_the_test_fraction():
    labels = np.array([0.0] * 80 + [1.0] * 20)
    pinned = np.full(100, FREE, dtype=np.int8)
    pinned[:30] = TEST
    pinned[90:] = TRAIN
    train, test = split_train_test(labels, 0.2, 0, pinned)
    assert set(range(30)) <= set(test) and not set(range(90, 100)) & set(test)
    assert len(test) == 30 + 4  # class 0 already has 30 ≥ its 16; class 1 gets 4 of its 10 free rows
    assert sorted(np.concatenate([train, test])) == list(range(100))
    free = np.full(100, FREE, dtype=np.int8)
    assert all(
        np.array_equal(a, b) for a, b in zip(split_train_test(labels, 0.2, 5, free), split_train_test(labels, 0.2, 5))
    )
    with pytest.raises(DataError, match="pinned sides"):
        split_train_test(labels, 0.2, 0, np.full(100, 7))


def test_malformed_and_contradicting_pin_frames_are_refused():
    frame = pin_frame(np.array([TEST, TRAIN, TEST], dtype=np.int8))
    assert list(read_pin_frame(frame, 3)) == [TEST, TRAIN, TEST]
    with pytest.raises(ProtocolError, match="about 3 customers .* where the alignment shares 4"):
        read_pin_frame(frame, 4)
    with pytest.raises(ProtocolError, match="not a version-1 pin frame"):
        read_pin_frame(b"XXXX" + frame[4:], 3)
    with pytest.raises(ProtocolError, match="past its count"):
        read_pin_frame(frame[:-1] + b"\xff", 3)
    member = HoldoutMember(1, np.zeros(5), 0.2, 0)
    member.aligned(0, np.array([4, 2, 0]))
    member.receive(0, frame)
    assert list(member.pinned) == [TEST, FREE, TRAIN, FREE, TEST]
    with pytest.raises(ProtocolError, match="contradict sides already agreed for 2 shared customers"):
        member.receive(0, pin_frame(np.array([TRAIN, TRAIN, TRAIN], dtype=np.int8)))
    with pytest.raises(ProtocolError, match="only from a lower-indexed institution"):
        member.receive(2, frame)


def test_repeated_customer_ids_are_refused():
    with pytest.raises(DataError, match="institution 1 lists 1 customer id"):
        agree_holdout([["a", "b"], ["c", " C"]], [np.zeros(2), np.zeros(2)], 0.2, 0)


def test_a_bank_table_carries_its_agreed_sides_to_the_client_split(tmp_path):
    """The ClientApp's split (load_bank -> encode_bank) keeps the pinned sides; no encoder reads them."""
    import pandas as pd

    from fedsilo.peers.data.bank import load_bank
    from fedsilo.peers.data.encoding import SPLIT_COLUMN, BankSummary, TabularEncoder

    rng = np.random.default_rng(0)
    sides = np.where(rng.random(200) < 0.2, TEST, TRAIN).astype(np.int8)
    frame = pd.DataFrame({"x": np.arange(200.0), "y": rng.integers(0, 2, 200), SPLIT_COLUMN: sides})
    encoder = TabularEncoder.fit([BankSummary.from_frame(frame, "y")], "y")
    assert [c.name for c in encoder.columns] == ["x"]
    frame.to_parquet(tmp_path / "bank.parquet", index=False)
    (tmp_path / "encoder.json").write_text(encoder.to_json())
    data = load_bank(str(tmp_path / "bank.parquet"), str(tmp_path / "encoder.json"), 0.2, 0)
    held_out = np.sort(np.round(data.x_test[:, 0].numpy() * frame["x"].std(ddof=0) + frame["x"].mean()))
    assert np.array_equal(held_out, np.flatnonzero(sides == TEST))


def _sides_by_customer(ids, sides):
    by: dict[int, set[int]] = {}
    for own, own_sides in zip(ids, sides):
        for identifier, side in zip(own, own_sides):
            by.setdefault(_customer(identifier), set()).add(int(side))
    return by


@pytest.mark.parametrize("parties", [2, 3])
def test_a_split_drawn_from_the_os_csprng_is_still_one_side_per_shared_customer(parties):
    """seed=None (the daemons' mode): sides agree at every holder, each class keeps its test fraction."""
    ids, labels = _institutions(2)
    ids, labels = ids[:parties], labels[:parties]
    agreement = agree_holdout(ids, labels, 0.2, seed=None, kind="customer")
    by = _sides_by_customer(ids, agreement.sides)
    shared = [c for c in by if sum(c in {_customer(x) for x in own} for own in ids) > 1]
    assert len(shared) == (150 if parties == 2 else 325)
    assert all(len(by[c]) == 1 for c in by)
    for own_labels, own_sides in zip(labels, agreement.sides):
        for value in (0.0, 1.0):
            assert abs((own_sides[own_labels == value] == TEST).mean() - 0.2) < 0.03
    again = agree_holdout(ids, labels, 0.2, seed=None, kind="customer")  # a fresh draw, not a replay
    assert not np.array_equal(agreement.sides[0], again.sides[0])


def test_a_member_with_the_public_seed_cannot_recompute_a_csprng_split():
    """The attacker knows the signed job (its seed) and even institution 0's labels, row for row.

    With the job's seed it reproduces a seeded split exactly; drawn from the OS CSPRNG, its
    recomputed test set overlaps the real one no better than two independent draws.
    """
    ids, labels = _institutions(3)
    job_seed = 7
    guess = set(split_train_test(labels[0], 0.2, job_seed)[1])
    seeded = agree_holdout(ids[:2], labels[:2], 0.2, seed=job_seed, kind="customer")
    assert set(np.flatnonzero(seeded.sides[0] == TEST)) == guess  # the seeded split is public
    drawn = agree_holdout(ids[:2], labels[:2], 0.2, seed=None, kind="customer")
    test = set(np.flatnonzero(drawn.sides[0] == TEST))
    overlap = len(test & guess) / len(test)
    assert overlap < 0.3  # chance is the test fraction, 0.2 (150 test rows: sd ≈ 0.03)


def test_a_member_splits_once():
    member = HoldoutMember(0, np.zeros(10), 0.2, None)
    member.split()
    with pytest.raises(ProtocolError, match="splits once"):
        member.split()
