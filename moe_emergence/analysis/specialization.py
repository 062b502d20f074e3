"""Domain specialization of one MoE layer's top-1 routing, with baselines.

Definitions (each computed once, here):
- P(E|D): the fraction of domain D's tokens routed to each expert (rows sum to 1).
- max share of a domain: max_i P(E=i|D); lift = max share / (1/E), uniform is 1.
- domain purity of expert i: max_D P(D|E=i) under **equal domain priors**,
  P(D|E=i) = P(E=i|D) / sum_D' P(E=i|D'); chance is 1/|D|. Experts that
  receive no token have no purity (NaN) and are left out of the mean.
- I(E;D)/H(D): mutual information of expert and domain under **equal domain
  priors** (P(D) = 1/|D|, so H(D) = log |D|), divided by H(D). 0 means the
  expert says nothing about the domain, 1 means it identifies the domain.
  Equal priors make the number independent of how many eval tokens each
  domain happens to have (the eval set is not balanced).

Baselines, both over groups (a math template, a stdlib package, an article):
the tokens of a document are not independent, and neither are the documents
of one template, which differ only in names and numbers.
- permutation: the domain labels of whole groups are shuffled across groups
  (each domain keeps its number of groups); the metric's mean and 95th
  percentile over shuffles, and a one-sided p-value.
- bootstrap: groups resampled with replacement within each domain; the
  2.5-97.5 percentile interval.
Both are vectorized: per-group expert counts are reduced to one [D, E] table
per draw by a matrix product, never a loop over tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from moe_emergence.analysis.information import mutual_information

# Bound on draws x documents held in memory at once by the resampling products.
_CHUNK_CELLS = 4_000_000


def encode_labels(
    values: Sequence[Any] | np.ndarray, names: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Integer codes for labels that may be strings; `names` fixes the order (and the code of each)."""
    arr = np.asarray(values)
    if names is None:
        if np.issubdtype(arr.dtype, np.integer):
            n = int(arr.max()) + 1 if arr.size else 0
            return arr.astype(np.int64), [str(i) for i in range(n)]
        uniq, codes = np.unique(arr, return_inverse=True)
        return codes.astype(np.int64), [str(u) for u in uniq]
    names = [str(n) for n in names]
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() >= len(names)):
            raise ValueError(f"label codes must lie in 0..{len(names) - 1} for names {names}")
        return arr.astype(np.int64), names
    lookup = {n: i for i, n in enumerate(names)}
    uniq, inv = np.unique(arr.astype(str), return_inverse=True)
    missing = [u for u in uniq if u not in lookup]
    if missing:
        raise ValueError(f"labels {missing[:5]} are not among the known names {names}")
    return np.array([lookup[u] for u in uniq], dtype=np.int64)[inv], names


def expert_domain_counts(
    expert: np.ndarray, domain: np.ndarray, n_experts: int, n_domains: int
) -> np.ndarray:
    """Token counts [D, E] of (domain, top-1 expert)."""
    expert = np.asarray(expert, dtype=np.int64)
    domain = np.asarray(domain, dtype=np.int64)
    return np.bincount(domain * n_experts + expert, minlength=n_domains * n_experts).reshape(
        n_domains, n_experts
    )


def p_expert_given_domain(counts: np.ndarray) -> np.ndarray:
    """Row-normalize [..., D, E] counts into P(E|D); empty rows stay 0."""
    c = np.asarray(counts, dtype=np.float64)
    tot = c.sum(axis=-1, keepdims=True)
    return np.divide(c, tot, out=np.zeros_like(c), where=tot > 0)


def max_share(counts: np.ndarray) -> np.ndarray:
    """max_i P(E=i|D) per domain, [..., D]."""
    return p_expert_given_domain(counts).max(axis=-1)


def p_domain_given_expert(counts: np.ndarray) -> np.ndarray:
    """P(D|E) under equal domain priors, [..., D, E]; columns of unused experts are 0."""
    p = p_expert_given_domain(counts)
    col = p.sum(axis=-2, keepdims=True)
    return np.divide(p, col, out=np.zeros_like(p), where=col > 0)


def domain_purity(counts: np.ndarray) -> np.ndarray:
    """max_D P(D|E=i) with equal domain priors, per expert [..., E]; NaN for unused experts."""
    post = p_domain_given_expert(counts)
    return np.where(post.sum(axis=-2) > 0, post.max(axis=-2), np.nan)


def mean_purity(counts: np.ndarray) -> np.ndarray:
    """Mean domain purity over the experts that receive tokens, [...]."""
    pur = domain_purity(counts)
    live = ~np.isnan(pur)
    return np.where(
        live.any(axis=-1), np.nansum(pur, axis=-1) / np.maximum(live.sum(axis=-1), 1), np.nan
    )


def domain_mi_ratio(counts: np.ndarray) -> np.ndarray:
    """I(E;D)/H(D) under equal priors over the domains present, [...].

    The joint is P(D, E) = P(E|D) / |D| over the |D| domains with tokens;
    H(D) = log |D|. NaN with fewer than two domains.
    """
    c = np.asarray(counts, dtype=np.float64)
    p = p_expert_given_domain(c)
    present = c.sum(axis=-1) > 0
    n = present.sum(axis=-1)
    w = present / np.maximum(n, 1)[..., None]
    mi = mutual_information(w[..., None] * p)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 2, np.clip(mi, 0.0, None) / np.log(np.maximum(n, 2)), np.nan)


def unit_counts(
    expert: np.ndarray, domain: np.ndarray, doc: np.ndarray, n_experts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-unit (group) expert counts [n_units, E], each unit's domain [n_units], and its id.

    Raises if a unit carries more than one domain (the unit of shuffling
    must be domain-pure).
    """
    expert = np.asarray(expert, dtype=np.int64)
    domain = np.asarray(domain, dtype=np.int64)
    doc_ids, d = np.unique(np.asarray(doc), return_inverse=True)
    n_docs = len(doc_ids)
    counts = np.bincount(d * n_experts + expert, minlength=n_docs * n_experts).reshape(
        n_docs, n_experts
    )
    dom_of_doc = np.zeros(n_docs, dtype=np.int64)
    dom_of_doc[d] = domain
    mixed = dom_of_doc[d] != domain
    if mixed.any():
        bad = doc_ids[d[np.argmax(mixed)]]
        raise ValueError(
            f"group {bad!r} has tokens of more than one domain; resampling units must be domain-pure"
        )
    return counts, dom_of_doc, doc_ids


def _chunks(n_draws: int, n_docs: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_CELLS // max(n_docs, 1))
    return [(a, min(a + step, n_draws)) for a in range(0, n_draws, step)]


def permuted_tables(
    doc_counts: np.ndarray,
    doc_domain: np.ndarray,
    n_domains: int,
    n_permutations: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """[P, D, E] tables with the units' domain labels shuffled across units."""
    n_docs, n_exp = doc_counts.shape
    out = np.empty((n_permutations, n_domains, n_exp))
    c = doc_counts.astype(np.float64)
    for a, b in _chunks(n_permutations, n_docs):
        labels = rng.permuted(np.broadcast_to(doc_domain, (b - a, n_docs)), axis=1)
        for dom in range(n_domains):
            out[a:b, dom] = (labels == dom).astype(np.float64) @ c
    return out


def bootstrap_tables(
    doc_counts: np.ndarray,
    doc_domain: np.ndarray,
    n_domains: int,
    n_bootstrap: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """[B, D, E] tables from units resampled with replacement within each domain."""
    n_exp = doc_counts.shape[1]
    out = np.zeros((n_bootstrap, n_domains, n_exp))
    for dom in range(n_domains):
        idx = np.flatnonzero(doc_domain == dom)
        n = len(idx)
        if n == 0:
            continue
        c = doc_counts[idx].astype(np.float64)
        for a, b in _chunks(n_bootstrap, n):
            draws = rng.integers(0, n, size=(b - a, n)) + np.arange(b - a)[:, None] * n
            weights = np.bincount(draws.ravel(), minlength=(b - a) * n).reshape(b - a, n)
            out[a:b, dom] = weights @ c
    return out


def with_baselines(value: float, null: np.ndarray, boot: np.ndarray) -> dict[str, float]:
    """A metric's value next to its permutation null (mean, 95th pct, p) and bootstrap CI."""
    null = null[np.isfinite(null)]
    boot = boot[np.isfinite(boot)]
    nan = float("nan")
    return {
        "value": float(value),
        "ci_low": float(np.percentile(boot, 2.5)) if boot.size else nan,
        "ci_high": float(np.percentile(boot, 97.5)) if boot.size else nan,
        "null_mean": float(null.mean()) if null.size else nan,
        "null_p05": float(np.percentile(null, 5)) if null.size else nan,
        "null_p95": float(np.percentile(null, 95)) if null.size else nan,
        # one-sided: how often a shuffle is at least as large (the +1 keeps p > 0)
        "p_value": float((1 + np.sum(null >= value)) / (1 + null.size)) if null.size else nan,
    }


def point_metrics(counts: np.ndarray) -> dict[str, float]:
    """The three domain numbers of one [D, E] table, without resampling."""
    return {
        "mi_ratio": float(domain_mi_ratio(counts)),
        "max_share": float(max_share(counts).max()),
        "mean_purity": float(mean_purity(counts)),
    }


def domain_specialization(
    expert: np.ndarray,
    domain: np.ndarray,
    unit: np.ndarray,
    n_experts: int,
    domain_names: Sequence[str],
    *,
    n_permutations: int = 200,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """All domain-specialization numbers of one layer with their baselines (JSON-ready).

    `domain` holds codes into `domain_names` (or the names themselves); `unit`
    the resampling unit of every token (its group).
    Returned keys: domains, n_experts, n_tokens, n_units, tokens_per_domain,
    units_per_domain, counts [D][E], p_expert_given_domain [D][E],
    uniform_share, chance_purity, priors ("equal"), n_permutations,
    n_bootstrap; `mi_ratio`, `max_share`, `mean_purity` as
    {value, ci_low, ci_high, null_mean, null_p95, p_value}; `per_domain`
    {name: {max_share, expert, lift, null_mean}}; `purity` [E] and
    `purity_domain` [E] (NaN/None for unused experts).
    """
    codes, names = encode_labels(domain, domain_names)
    n_dom = len(names)
    expert = np.asarray(expert, dtype=np.int64)
    if expert.size and (expert.min() < 0 or expert.max() >= n_experts):
        raise ValueError(f"expert indices must lie in 0..{n_experts - 1}")
    rng = np.random.default_rng(seed)
    dc, ddom, _ = unit_counts(expert, codes, unit, n_experts)
    table = np.zeros((n_dom, n_experts))
    np.add.at(table, ddom, dc)
    perm = permuted_tables(dc, ddom, n_dom, n_permutations, rng)
    boot = bootstrap_tables(dc, ddom, n_dom, n_bootstrap, rng)

    def summary(f: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
        return with_baselines(float(f(table)), f(perm), f(boot))

    share = max_share(table)
    null_share = max_share(perm).mean(axis=0)
    p = p_expert_given_domain(table)
    purity = domain_purity(table)
    post_arg = np.argmax(p_domain_given_expert(table), axis=0)
    return {
        "domains": names,
        "n_experts": n_experts,
        "n_tokens": int(expert.size),
        "n_units": int(len(ddom)),
        "tokens_per_domain": {n: int(t) for n, t in zip(names, table.sum(axis=1), strict=True)},
        "units_per_domain": {n: int((ddom == i).sum()) for i, n in enumerate(names)},
        "counts": table.astype(np.int64).tolist(),
        "p_expert_given_domain": p.tolist(),
        "uniform_share": 1.0 / n_experts,
        "chance_purity": 1.0 / n_dom,
        "priors": "equal",
        "n_permutations": n_permutations,
        "n_bootstrap": n_bootstrap,
        "mi_ratio": summary(domain_mi_ratio),
        "max_share": summary(lambda t: max_share(t).max(axis=-1)),
        "mean_purity": summary(mean_purity),
        "per_domain": {
            n: {
                "max_share": float(share[i]),
                "expert": int(np.argmax(p[i])),
                "lift": float(share[i] * n_experts),
                "null_mean": float(null_share[i]),
            }
            for i, n in enumerate(names)
        },
        "purity": [float(x) for x in purity],
        "purity_domain": [
            None if np.isnan(purity[e]) else names[int(post_arg[e])] for e in range(n_experts)
        ],
    }
