"""Consecutive-token locality: how often adjacent tokens of a document share their expert.

R = P(e_t = e_{t+1}) over pairs of adjacent tokens of the same document
(pairs across document or packing boundaries are not counted: a pair needs the
same `doc` and positions p, p+1). Two chance values:
- load chance sum_i f_i^2, with f the layer's load fractions over all tokens
  given: the rate of a router that picks experts independently with these loads;
- domain chance sum_D w_D sum_i P(i|D)^2, with w_D the share of pairs in D: the
  rate if routing depended on the domain only. R above it is locality that
  the domain does not explain.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moe_emergence.analysis.specialization import expert_domain_counts, p_expert_given_domain
from moe_emergence.model.routing_stats import load_fractions


def adjacent_pairs(doc: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (first [M], second [M]) of tokens that follow each other in the same document."""
    doc = np.asarray(doc)
    position = np.asarray(position, dtype=np.int64)
    order = np.lexsort((position, doc))
    d, p = doc[order], position[order]
    ok = (d[1:] == d[:-1]) & (p[1:] == p[:-1] + 1)
    return order[:-1][ok], order[1:][ok]


def consecutive_same_expert(
    expert: np.ndarray,
    doc: np.ndarray,
    position: np.ndarray,
    n_experts: int,
    domain: np.ndarray | None = None,
    n_domains: int | None = None,
) -> dict[str, Any]:
    """Same-expert rate of adjacent tokens within documents, with its chance values.

    Returns {rate, n_pairs, chance_load, lift_load} and, with `domain`,
    {chance_domain, lift_domain}.
    """
    expert = np.asarray(expert, dtype=np.int64)
    first, second = adjacent_pairs(doc, position)
    n_pairs = int(first.size)
    rate = float((expert[first] == expert[second]).mean()) if n_pairs else float("nan")
    counts = np.bincount(expert, minlength=n_experts)
    frac = load_fractions(counts)
    chance = float((frac**2).sum())
    out: dict[str, Any] = {
        "rate": rate,
        "n_pairs": n_pairs,
        "chance_load": chance,
        "lift_load": rate / chance if chance > 0 else float("nan"),
    }
    if domain is not None:
        domain = np.asarray(domain, dtype=np.int64)
        n_dom = n_domains or (int(domain.max()) + 1 if domain.size else 1)
        p = p_expert_given_domain(expert_domain_counts(expert, domain, n_experts, n_dom))
        w = np.bincount(domain[first], minlength=n_dom) / max(n_pairs, 1)
        chance_d = float((w * (p**2).sum(axis=1)).sum())
        out["chance_domain"] = chance_d
        out["lift_domain"] = rate / chance_d if chance_d > 0 else float("nan")
    return out
