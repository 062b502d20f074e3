"""Known answers: a token-id router is no learned specialization, groups resample together."""

from __future__ import annotations

import numpy as np
import pytest

from moe_emergence.analysis.collect import TokenTable
from moe_emergence.analysis.measure import GroupBootstrap, add_quality, add_routing, layer_numbers
from moe_emergence.analysis.report import specialization_verdict
from moe_emergence.analysis.results import Table, one
from moe_emergence.core.config import AnalyzeParams

DOMAINS = ["code", "math", "prose"]
E = 8


def table_of(r: dict[str, np.ndarray], block: int = 64) -> TokenTable:
    """A TokenTable over the synthetic routing's tokens, cut into blocks of one domain each."""
    n = len(r["expert"]) // block * block
    dom = r["domain"][:n]
    ids = r["token_id"][:n].reshape(-1, block)
    doc = r["doc"][:n]
    _, doc_code = np.unique(doc, return_inverse=True)
    group = doc_code // 3  # three documents per group
    keep = (dom.reshape(-1, block) == dom.reshape(-1, block)[:, :1]).all(axis=1)  # domain-pure blocks
    rows = np.flatnonzero(keep)
    take = (rows[:, None] * block + np.arange(block)).reshape(-1)
    return TokenTable(
        ids=ids[rows], rows=rows, block_domain=dom.reshape(-1, block)[rows, 0], domain=dom[take],
        doc=doc_code[take], position=r["position"][:n][take], doc_ids=np.unique(doc_code).astype(str),
        doc_domain=np.array([]),
        domain_names=DOMAINS, group=group[take], group_ids=np.unique(group), model_ids=ids[rows],
    ), take


def token_router(token_id: np.ndarray, seed: int) -> np.ndarray:
    """A router that depends on the token id only: a random map id -> expert."""
    rng = np.random.default_rng(seed)
    table = rng.integers(0, E, size=int(token_id.max()) + 1)
    return table[token_id]


def test_a_token_id_router_is_no_learned_specialization(make_routing):
    r = make_routing(docs_per_domain=(60, 60, 60), vocab=400, seed=1)
    tab, take = table_of(r)
    params = AnalyzeParams(n_permutations=50, n_bootstrap=50, n_shuffles=3, min_token_count=5)
    # The untrained null: token-id routers with other random maps; "trained": one more such map.
    untrained = [{1: layer_numbers(token_router(tab.token_id, s), tab, E, 5)} for s in range(19)]
    trained = token_router(tab.token_id, 99)
    t = Table()
    add_routing(t, "moe", 0, 1, trained, tab, E, [u[1] for u in untrained], params, {})
    df = t.frame()
    mi_shuffled = one(df, metric="mi_ratio", null="shuffled")
    # against the label shuffle the vocabulary alone looks like specialization...
    assert mi_shuffled["value"] > mi_shuffled["null_p95"]
    # ...against the untrained router it is not
    verdict = specialization_verdict(df, "moe", 0, 1)
    assert "no evidence that training made the experts more domain-specific" in verdict

    # a router that sends each domain's tokens to its own experts is judged specialized
    domain_router = np.where(np.random.default_rng(3).random(len(trained)) < 0.7, tab.domain * 2, trained)
    t2 = Table()
    add_routing(t2, "moe", 0, 1, domain_router, tab, E, [u[1] for u in untrained], params, {})
    assert "training made the experts more domain-specific than an untrained router" in specialization_verdict(
        t2.frame(), "moe", 0, 1)


def test_bootstrap_resamples_whole_groups(make_routing):
    r = make_routing(docs_per_domain=(12, 12, 12), seed=2)
    tab, _ = table_of(r, block=16)
    boot = GroupBootstrap.make(tab, n_draws=40, seed=0)
    b, t = tab.ids.shape
    # a value constant within each group: any draw is a weighted mean of group values
    value_of_group = np.random.default_rng(0).normal(size=int(tab.group.max()) + 1)
    values = value_of_group[boot.group]
    point, draws = boot.domain_means(values)
    for d in range(len(DOMAINS)):
        g = boot.groups_of[d]
        n = np.array([(boot.group[boot.domain == d] == x).sum() for x in g], dtype=float)
        want = (boot.weights[d] @ (n * value_of_group[g])) / (boot.weights[d] @ n)
        np.testing.assert_allclose(draws[:, d], want)
        assert point[d] == pytest.approx((n * value_of_group[g]).sum() / n.sum())
        assert boot.weights[d].sum(axis=1).tolist() == [len(g)] * 40  # n groups drawn with replacement


def test_one_group_per_domain_gives_no_interval_width(make_routing):
    r = make_routing(docs_per_domain=(4, 4, 4), seed=4)
    tab, _ = table_of(r, block=16)
    tab.group = tab.domain.copy()  # each domain is a single group
    boot = GroupBootstrap.make(tab, n_draws=30, seed=0)
    losses = np.random.default_rng(1).random(len(boot.domain))
    t = Table()
    add_quality(t, {("dense", 0): losses, ("moe", 0): losses + 0.1}, {"bigram": losses + 1.0}, boot)
    df = t.frame()
    delta = one(df, variant="moe", seed=0.0, metric="eval_loss_delta_macro")
    assert delta["value"] == pytest.approx(0.1)
    assert delta["ci_low"] == pytest.approx(0.1) and delta["ci_high"] == pytest.approx(0.1)
    margin = one(df, variant="dense", seed=0.0, metric="bigram_margin_macro")
    assert margin["value"] == pytest.approx(1.0)
