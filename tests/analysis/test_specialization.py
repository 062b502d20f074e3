import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from moe_emergence.analysis.specialization import (
    bootstrap_tables,
    domain_mi_ratio,
    domain_purity,
    domain_specialization,
    encode_labels,
    expert_domain_counts,
    max_share,
    permuted_tables,
    unit_counts,
)

DOMAINS = ["code", "math", "prose"]


def test_perfect_domain_specialization_gives_one(make_routing):
    r = make_routing(p_domain=1.0)
    out = domain_specialization(
        r["expert"], r["domain"], r["doc"], 8, DOMAINS, n_permutations=100, n_bootstrap=50
    )
    m = out["mi_ratio"]
    assert m["value"] == pytest.approx(1.0)
    assert m["ci_low"] == pytest.approx(1.0) and m["ci_high"] == pytest.approx(1.0)
    assert m["null_p95"] < 0.2 and m["p_value"] < 0.02
    assert out["mean_purity"]["value"] == pytest.approx(1.0)
    for i, d in enumerate(DOMAINS):
        assert out["per_domain"][d] == pytest.approx(
            {
                "max_share": 1.0,
                "expert": i,
                "lift": 8.0,
                "null_mean": out["per_domain"][d]["null_mean"],
            }
        )
    assert out["purity_domain"][:3] == DOMAINS and out["purity_domain"][3:] == [None] * 5


def test_independent_routing_is_near_zero_and_inside_its_permutation_baseline(make_routing):
    r = make_routing(docs_per_domain=(40, 60, 30), seed=3)
    out = domain_specialization(
        r["expert"], r["domain"], r["doc"], 8, DOMAINS, n_permutations=200, n_bootstrap=50
    )
    m = out["mi_ratio"]
    assert m["value"] < 0.01
    assert m["value"] <= m["null_p95"] and m["p_value"] > 0.05
    assert m["ci_low"] <= m["value"] <= m["ci_high"]


def test_weak_specialization_is_detected_above_the_baseline(make_routing):
    r = make_routing(p_domain=0.15, seed=1)
    m = domain_specialization(
        r["expert"], r["domain"], r["doc"], 8, DOMAINS, n_permutations=200, n_bootstrap=100
    )["mi_ratio"]
    assert m["value"] > m["null_p95"] and m["p_value"] < 0.01
    assert m["ci_low"] > m["null_p95"]


def test_string_domains_are_accepted_in_the_given_order(make_routing):
    r = make_routing(p_domain=1.0)
    names = np.array(DOMAINS)[r["domain"]]
    out = domain_specialization(
        r["expert"], names, r["doc"], 8, DOMAINS, n_permutations=10, n_bootstrap=10
    )
    assert out["per_domain"]["math"]["expert"] == 1
    with pytest.raises(ValueError, match="not among the known names"):
        encode_labels(np.array(["code", "poetry"]), DOMAINS)


def test_purity_uses_equal_domain_priors():
    # code sends everything to E0; math splits evenly. P(code|E0) = 1 / (1 + 0.5) with equal priors,
    # whatever the token counts (math has 100x more tokens here).
    counts = np.array([[10, 0], [1000, 1000]])
    pur = domain_purity(counts)
    assert pur == pytest.approx([1 / 1.5, 1.0])
    assert np.isnan(domain_purity(np.array([[5, 0], [5, 0]]))[1])


def test_max_share_and_mixed_documents():
    assert max_share(np.array([[3, 1], [0, 0]])) == pytest.approx([0.75, 0.0])
    with pytest.raises(ValueError, match="more than one domain"):
        unit_counts(np.array([0, 1]), np.array([0, 1]), np.array([5, 5]), 2)


def test_resampled_tables_keep_their_invariants(make_routing):
    r = make_routing(docs_per_domain=(5, 9, 4))
    dc, dd, _ = unit_counts(r["expert"], r["domain"], r["doc"], 8)
    rng = np.random.default_rng(0)
    perm = permuted_tables(dc, dd, 3, 17, rng)
    # shuffling labels moves documents between domains but keeps every token
    assert np.allclose(perm.sum(axis=1), dc.sum(axis=0))
    boot = bootstrap_tables(dc, dd, 3, 11, rng)
    # each draw takes as many documents of a domain as it has, all from that domain
    assert boot.shape == (11, 3, 8) and (boot >= 0).all()
    for d in range(3):
        lens = dc[dd == d].sum(axis=1)
        totals = boot[:, d].sum(axis=1)
        assert (totals >= lens.min() * len(lens)).all() and (totals <= lens.max() * len(lens)).all()


tables = arrays(np.int64, (3, 5), elements=st.integers(0, 50)).filter(
    lambda t: (t.sum(axis=1) > 0).all()
)


@settings(max_examples=60, deadline=None)
@given(tables, st.permutations(range(5)), st.integers(1, 20))
def test_mi_ratio_bounds_and_invariances(t, perm, scale):
    v = domain_mi_ratio(t)
    assert -1e-12 <= v <= 1 + 1e-12
    # relabelling experts changes nothing
    assert domain_mi_ratio(t[:, list(perm)]) == pytest.approx(v, abs=1e-12)
    # equal priors: a domain with more tokens but the same distribution changes nothing
    t2 = t.copy()
    t2[0] *= scale
    assert domain_mi_ratio(t2) == pytest.approx(v, abs=1e-12)


def test_batched_tables_match_single():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 30, size=(4, 3, 8))
    assert np.allclose(domain_mi_ratio(batch), [domain_mi_ratio(b) for b in batch])
    assert expert_domain_counts(np.array([0, 1, 1]), np.array([0, 0, 1]), 2, 2).tolist() == [
        [1, 1],
        [0, 1],
    ]
