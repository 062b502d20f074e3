"""Split invariants: groups never straddle, assignment is stable as the corpus grows, the size
rule holds, and the leakage proof drops exact and near-duplicate eval documents."""

from __future__ import annotations

import math

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moe_emergence.core.config import SplitParams
from moe_emergence.data.split import assign_groups, eval_bounds, group_key, split_domain

group_sizes = st.dictionaries(
    st.text("abcdefghij/_", min_size=1, max_size=8), st.integers(1, 30), min_size=1, max_size=80
)


def _eval_docs(sizes, a):
    return sum(sizes[g] for g in a.eval_groups)


@settings(max_examples=200, deadline=None)
@given(sizes=group_sizes, seed=st.integers(0, 3))
def test_size_rule(sizes, seed):
    sp = SplitParams(seed=seed, eval_min_groups=0)
    a = assign_groups(sizes, sp)
    n = sum(sizes.values())
    lo, hi = eval_bounds(n, sp)
    assert lo == min(max(10, math.floor(0.05 * n)), math.floor(0.10 * n))
    k = _eval_docs(sizes, a)
    assert k <= hi
    if k < lo:  # only when no train group fits under the cap
        assert all(k + sizes[g] > hi for g in sizes if g not in a.eval_groups)


@settings(max_examples=100, deadline=None)
@given(sizes=group_sizes, count=st.integers(1, 50))
def test_explicit_eval_count(sizes, count):
    sp = SplitParams(eval_count=count, eval_min_groups=0)
    a = assign_groups(sizes, sp)
    k = _eval_docs(sizes, a)
    want = min(count, sum(sizes.values()))
    assert k <= want
    assert k == want or all(k + sizes[g] > want for g in sizes if g not in a.eval_groups)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=group_sizes, new=group_sizes, grow=st.lists(st.integers(0, 10), max_size=80), seed=st.integers(0, 3))
def test_stable_when_documents_are_added(old, new, grow, seed):
    """Groups whose hash puts them in eval stay there when documents and groups are added."""
    sp = SplitParams(seed=seed, eval_max_fraction=0.5, eval_min_groups=0)
    grown = dict(old)
    for g, extra in zip(sorted(old), grow, strict=False):
        grown[g] += extra  # documents added to existing groups
    for g, k in new.items():
        grown[g] = grown.get(g, 0) + k  # and new groups
    a_old, a_new = assign_groups(old, sp), assign_groups(grown, sp)
    core_old = {g for g in old if group_key(g, seed) < sp.eval_fraction}
    if a_old.removed_for_cap == 0 and a_new.removed_for_cap == 0:
        assert core_old <= a_old.eval_groups
        assert core_old <= a_new.eval_groups
    # and membership is always a function of the group alone: no group is split
    assert a_new.eval_groups <= set(grown)


@settings(max_examples=150, deadline=None)
@given(sizes=group_sizes, min_groups=st.integers(0, 20), seed=st.integers(0, 3))
def test_eval_gets_the_minimum_number_of_groups_and_train_keeps_the_majority(sizes, min_groups, seed):
    a = assign_groups(sizes, SplitParams(seed=seed, eval_min_groups=min_groups))
    assert len(a.eval_groups) >= min(min_groups, len(sizes) // 2)
    if a.added_for_groups:  # groups are added up to the minimum, never past half of them
        assert len(a.eval_groups) == min(min_groups, len(sizes) // 2)


def test_assignment_is_seeded():
    sizes = {f"g{i}": 1 for i in range(400)}
    a0 = assign_groups(sizes, SplitParams(seed=0))
    assert a0 == assign_groups(dict(reversed(list(sizes.items()))), SplitParams(seed=0))  # order-free
    assert a0.eval_groups != assign_groups(sizes, SplitParams(seed=1)).eval_groups


@settings(max_examples=30, deadline=None)
@given(docs=st.lists(st.tuples(st.integers(0, 15), st.text("abc xyz", min_size=1, max_size=40)), min_size=1, max_size=60))
def test_no_group_on_both_sides(docs, make_docs):
    table = make_docs([(f"d{i}", f"g{g}", f"{t} {i}") for i, (g, t) in enumerate(docs)])
    out, rep = split_domain(table, SplitParams(eval_min=2))
    sides: dict[str, set[str]] = {}
    for g, s in zip(out.column("group_id").to_pylist(), out.column("split").to_pylist(), strict=True):
        sides.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in sides.values())
    assert rep["leakage"]["groups_on_both_sides"] == 0 and rep["leakage"]["shared_content_hashes"] == 0


def _words(seed: int, n: int) -> str:
    import random

    r = random.Random(seed)
    vocab = [f"w{i}" for i in range(500)]
    return " ".join(r.choice(vocab) for _ in range(n))


def test_exact_and_near_duplicates_leave_eval(make_docs):
    groups = [f"g{i:03d}" for i in range(60)]
    sp = SplitParams(eval_min=5)
    a = assign_groups(dict.fromkeys(groups, 1), sp)
    ev = sorted(a.eval_groups)
    tr = [g for g in groups if g not in a.eval_groups]
    texts = {g: _words(i, 300) for i, g in enumerate(groups)}
    base = texts[tr[0]]
    texts[ev[0]] = base.replace("w1 ", "w2 ", 1) + " tail"  # near-twin of a train document
    texts[ev[1]] = texts[tr[1]].upper()  # same normalised content: an exact duplicate
    table = make_docs([(f"doc-{g}", g, texts[g]) for g in groups])
    out, rep = split_domain(table, sp)
    kept_eval = set(out.filter(pa.compute.equal(out.column("split"), "eval")).column("group_id").to_pylist())
    assert ev[0] not in kept_eval and ev[1] not in kept_eval
    assert set(ev[2:]) <= kept_eval
    assert rep["leakage"]["near_dup_dropped"] == 1 and rep["leakage"]["exact_dropped"] == 1
    assert rep["near_dup_pairs"][0]["eval"] == f"doc-{ev[0]}" and rep["near_dup_pairs"][0]["train"] == f"doc-{tr[0]}"
    assert rep["eval"]["docs"] == len(ev) - 2 and rep["train"]["docs"] == len(tr)
