import numpy as np
import pytest

from moe_emergence.analysis.locality import adjacent_pairs, consecutive_same_expert


def test_independent_routing_sits_at_its_chance_value():
    rng = np.random.default_rng(0)
    p = np.array([0.4, 0.3, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0])
    n_docs, length = 400, 250
    expert = rng.choice(8, size=n_docs * length, p=p)
    doc = np.repeat(np.arange(n_docs), length)
    pos = np.tile(np.arange(length), n_docs)
    out = consecutive_same_expert(expert, doc, pos, 8)
    assert out["chance_load"] == pytest.approx((p**2).sum(), abs=0.005)
    assert out["rate"] == pytest.approx(out["chance_load"], abs=0.006)
    assert out["n_pairs"] == n_docs * (length - 1)


def test_pairs_never_cross_documents_or_gaps_and_order_does_not_matter():
    doc = np.array([1, 1, 1, 2, 2, 3, 3])
    pos = np.array([0, 1, 2, 0, 1, 0, 2])  # doc 3 has a gap
    expert = np.array([0, 0, 0, 0, 5, 5, 5])
    out = consecutive_same_expert(expert, doc, pos, 8)
    assert out["n_pairs"] == 3 and out["rate"] == pytest.approx(2 / 3)
    perm = np.random.default_rng(1).permutation(len(doc))
    assert consecutive_same_expert(expert[perm], doc[perm], pos[perm], 8) == out
    first, second = adjacent_pairs(doc, pos)
    assert sorted(zip(first.tolist(), second.tolist(), strict=True)) == [(0, 1), (1, 2), (3, 4)]


def test_domain_chance_explains_domain_routing(make_routing):
    r = make_routing(p_domain=1.0)
    out = consecutive_same_expert(r["expert"], r["doc"], r["position"], 8, domain=r["domain"])
    assert out["rate"] == 1.0 and out["chance_domain"] == pytest.approx(1.0)
    assert out["chance_load"] == pytest.approx(1 / 3, abs=0.05)
