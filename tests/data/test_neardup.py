"""MinHash near-duplicate detection: small edits are found, unrelated texts are not."""

from __future__ import annotations

import random

import numpy as np

from moe_emergence.data.neardup import find_near_duplicates, shingle_hashes, signatures


def _text(seed: int, n: int = 400) -> str:
    r = random.Random(seed)
    return " ".join(f"tok{r.randrange(2000)}" for _ in range(n))


def test_shingles_are_deterministic_and_case_blind():
    a = shingle_hashes("def f(x):\n    return x + 1", 3)
    assert np.array_equal(a, shingle_hashes("DEF F(X):  return X + 1", 3))
    assert a.dtype == np.uint32 and len(a) == len(set(a.tolist()))
    assert len(shingle_hashes("", 5)) == 1 and len(shingle_hashes("one two", 5)) == 1


def test_near_copies_found_unrelated_not():
    train = [_text(i) for i in range(50)]
    edited = train[7].split()
    edited[100:103] = ["x", "y", "z"]  # a small edit: still a near-twin
    queries = [" ".join(edited), _text(999), train[3]]
    sig_t, sig_q = signatures(train, 5, 128), signatures(queries, 5, 128)
    found = {d.query: d for d in find_near_duplicates(sig_t, sig_q, 0.8, 128)}
    assert set(found) == {0, 2}
    assert found[0].match == 7 and found[0].jaccard >= 0.8
    assert found[2].match == 3 and found[2].jaccard == 1.0


def test_empty_inputs():
    assert find_near_duplicates([], signatures(["a b c"], 5, 64), 0.8, 64) == []
