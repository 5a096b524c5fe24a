"""What both PSI protocols' tests share: the plaintext truth, random identifiers, edge cases, a recorded wire."""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence

from fedsilo.privacy.psi import Mode, PsiResult, canonical

# (receiver's identifiers, sender's identifiers): empty sets, full and no overlap, duplicates, unicode.
EDGE_CASES = [
    ([], []),
    ([], ["a", "b"]),
    (["a", "b"], []),
    (["a", "b", "c"], ["c", "b", "a"]),  # all shared
    (["a", "b", "c"], ["d", "e"]),  # none shared
    (["a", "A", " a ", "b", "b"], ["B", "a", "a"]),  # duplicates after normalization
    (["Müller", "ＡＣＭＥ", "Straße", "北京银行", "😀"], ["MÜLLER", "acme", "strasse", "北京银行", "x"]),  # unicode
]


def expected_positions(xs: Sequence[str], ys: Sequence[str], kind: str = "id") -> list[int]:
    """Positions (first occurrences) of xs whose canonical form is in ys: plaintext truth."""
    other = {canonical(y, kind) for y in ys}
    seen, out = set(), []
    for i, x in enumerate(xs):
        c = canonical(x, kind)
        if c in other and c not in seen:
            out.append(i)
        seen.add(c)
    return out


def rand_ids(rng: random.Random, n: int) -> list[str]:
    """``n`` random alphanumeric identifiers of 1 to 12 characters."""
    return ["".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(1, 12))) for _ in range(n)]


def assert_both_sides_match_plaintext(r: PsiResult, s: PsiResult, xs: Sequence[str], ys: Sequence[str]) -> None:
    """A both-sides run's answers (receiver ``r`` held ``xs``, sender ``s`` held ``ys``) are the plaintext ones."""
    assert r.positions is not None and s.positions is not None
    assert r.positions.tolist() == expected_positions(xs, ys)
    assert s.positions.tolist() == expected_positions(ys, xs)
    cx, cy = {canonical(x, "id") for x in xs}, {canonical(y, "id") for y in ys}
    assert r.cardinality == s.cardinality == len(cx & cy)
    assert (r.own_size, r.peer_size, s.own_size, s.peer_size) == (len(cx), len(cy), len(cy), len(cx))


def customers_and_their_wire(run: Callable[..., object]) -> tuple[set[str], bytes]:
    """Two overlapping sets of 50 customers run both ways through ``run(xs, ys, mode, tap=...)``.

    Returns every customer of either side and every frame that crossed, both directions, concatenated.
    """
    xs = [f"customer-{i}" for i in range(50)]
    ys = [f"customer-{i}" for i in range(25, 75)]
    frames: list[bytes] = []
    run(xs, ys, Mode.TO_BOTH, tap=lambda direction, frame: frames.append(frame))
    return set(xs) | set(ys), b"".join(frames)
