import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_emergence.analysis.token_identity import (
    _within_group_shuffle,
    heldout_predictability,
    routing_information,
    split_documents,
    transfer_predictability,
)


def test_token_id_routing_is_predicted_perfectly_on_held_out_documents(make_routing):
    # a small vocabulary so that every id occurs in both halves
    r = make_routing(p_token=1.0, vocab=40)
    h = heldout_predictability(r["expert"], r["token_id"], r["domain"], r["doc"], 8)
    assert h["coverage"] == 1.0
    assert h["accuracy"]["token"] == 1.0 and h["accuracy"]["token_domain"] == 1.0
    assert h["tip_norm"] == 1.0 and h["domain_gain"] == 0.0
    info = routing_information(r["expert"], r["token_id"], r["domain"], 8, n_shuffles=5)
    assert info["u_token"]["value"] == pytest.approx(1.0)
    assert info["u_domain_given_token"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert info["u_token"]["null_p95"] < 0.05
    assert info["vocab_specialization"]["value"] == pytest.approx(1.0)


def test_domain_routing_is_explained_by_domain_not_token(make_routing):
    r = make_routing(p_domain=1.0, vocab=200)
    h = heldout_predictability(r["expert"], r["token_id"], r["domain"], r["doc"], 8)
    assert h["accuracy"]["domain"] == 1.0
    assert h["accuracy"]["token_domain"] > h["accuracy"]["token"] and h["domain_gain"] > 0
    info = routing_information(r["expert"], r["token_id"], r["domain"], 8, n_shuffles=5)
    assert info["u_domain"]["value"] == pytest.approx(1.0)
    g = info["u_domain_given_token"]
    assert g["value"] > 0.1 and g["value"] > 5 * g["null_p95"]


def test_independent_routing_gives_no_predictability(make_routing):
    r = make_routing(seed=2)
    h = heldout_predictability(r["expert"], r["token_id"], r["domain"], r["doc"], 8)
    assert abs(h["tip_norm"]) < 0.05
    assert h["accuracy"]["token"] < 0.2
    info = routing_information(r["expert"], r["token_id"], r["domain"], 8, n_shuffles=10)
    # the plug-in estimate is biased upward; the shuffle null has the same bias
    u = info["u_token"]
    assert u["value"] <= u["null_p95"] * 1.5 and u["value"] == pytest.approx(
        u["null_mean"], abs=0.02
    )


def test_rare_ids_are_left_out_of_information(make_routing):
    r = make_routing(p_token=1.0)
    info = routing_information(
        r["expert"], r["token_id"], r["domain"], 8, min_token_count=10, n_shuffles=2
    )
    _, counts = np.unique(r["token_id"], return_counts=True)
    assert info["n_ids"] == int((counts >= 10).sum())
    assert info["token_fraction"] == pytest.approx(counts[counts >= 10].sum() / counts.sum())


def test_split_is_by_document_stratified_and_seeded(make_routing):
    r = make_routing(docs_per_domain=(10, 7, 1))
    a = split_documents(r["doc"], seed=4, strata=r["domain"])
    for d in np.unique(r["doc"]):
        assert len(set(a[r["doc"] == d])) == 1  # no document straddles the halves
    for dom, n in enumerate((10, 7, 1)):
        docs_a = np.unique(r["doc"][a & (r["domain"] == dom)])
        assert len(docs_a) == (n + 1) // 2
    assert (split_documents(r["doc"], seed=4, strata=r["domain"]) == a).all()
    assert not (split_documents(r["doc"], seed=5, strata=r["domain"]) == a).all()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 100)), min_size=1, max_size=60),
    st.integers(0, 2**31),
)
def test_within_group_shuffle_keeps_each_groups_values(pairs, seed):
    groups = np.array([g for g, _ in pairs])
    values = np.array([v for _, v in pairs])
    out = _within_group_shuffle(values, groups, np.random.default_rng(seed))
    for g in np.unique(groups):
        assert sorted(out[groups == g]) == sorted(values[groups == g])


def test_train_to_eval_transfer(make_routing):
    train = make_routing(p_token=1.0, vocab=40, seed=1)
    ev = make_routing(p_token=1.0, vocab=40, seed=2)
    pack = lambda r: (r["expert"], r["token_id"], r["domain"])  # noqa: E731
    out = transfer_predictability(pack(train), pack(ev), 8)
    assert out["accuracy"]["token"] == 1.0 and out["coverage"] == 1.0
    rnd = make_routing(seed=3, vocab=40)
    out = transfer_predictability(pack(train), pack(rnd), 8)
    assert out["accuracy"]["token"] < 0.25 and abs(out["tip_norm"]) < 0.1


def test_single_document_predicts_nothing_rather_than_zero():
    h = heldout_predictability(
        np.array([1, 2, 3]), np.array([5, 5, 5]), np.array([0, 0, 0]), np.array([9, 9, 9]), 4
    )
    assert h["n_tokens"] == 0 and np.isnan(h["accuracy"]["token"])
