"""Agreement between routings: of the same tokens, and of routing distributions.

- `routing_agreement`: two routings of the same token occurrences (a snapshot
  vs the final model, original vs format-perturbed text). For top-k sets it is
  OLMoE's router saturation, mean |S_a ∩ S_b| / k; for top-1 the fraction of
  tokens with the same expert. Its chance value is the agreement two routers
  with the same loads would reach if they chose independently:
  sum_i r_a,i * r_b,i / k, with r_i the fraction of tokens that have expert i
  in their set.
- `router_saturation`: `routing_agreement` of each saved snapshot with the
  final model, over training.
- `distribution_agreement`: for different tokens of the same domains (train vs
  eval), the overlap sum_i min(p_i, q_i) = 1 - total variation of the per-domain
  expert distributions, against the overlap with the other domains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from moe_emergence.analysis.specialization import encode_labels, p_expert_given_domain


def _as_sets(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    return a[:, None] if a.ndim == 1 else a


def _membership_rates(sets: np.ndarray, n_experts: int) -> np.ndarray:
    return np.bincount(sets.ravel(), minlength=n_experts) / max(sets.shape[0], 1)


def routing_agreement(
    a: np.ndarray,
    b: np.ndarray,
    n_experts: int,
    groups: np.ndarray | None = None,
    group_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Agreement of two routings of the same N tokens ([N] top-1 or [N, k] sets), with chance.

    Returns {agreement, chance, n_tokens} and, when `groups` is given,
    `per_group` {name: {agreement, chance, n_tokens}}.
    """
    sa, sb = _as_sets(a), _as_sets(b)
    if sa.shape != sb.shape:
        raise ValueError(
            f"routings to compare must have the same shape, got {sa.shape} and {sb.shape}"
        )
    k = sa.shape[1]
    # Experts within a token's set are distinct, so counting equal pairs counts the intersection.
    overlap = (sa[:, :, None] == sb[:, None, :]).sum(axis=(1, 2)) / k

    def summary(mask: np.ndarray | None) -> dict[str, float]:
        xa, xb, ov = (sa, sb, overlap) if mask is None else (sa[mask], sb[mask], overlap[mask])
        n = int(ov.size)
        chance = (
            float(_membership_rates(xa, n_experts) @ _membership_rates(xb, n_experts) / k)
            if n
            else float("nan")
        )
        return {
            "agreement": float(ov.mean()) if n else float("nan"),
            "chance": chance,
            "n_tokens": n,
        }

    out: dict[str, Any] = summary(None)
    if groups is not None:
        codes, names = encode_labels(groups, group_names)
        out["per_group"] = {name: summary(codes == i) for i, name in enumerate(names)}
    return out


def router_saturation(
    snapshots: Mapping[int, np.ndarray], final: np.ndarray, n_experts: int
) -> list[dict[str, float]]:
    """Agreement of each snapshot's routing with the final model's on the same tokens, by step."""
    return [
        {"step": int(step), **routing_agreement(snapshots[step], final, n_experts)}
        for step in sorted(snapshots)
    ]


def distribution_agreement(
    counts_a: np.ndarray, counts_b: np.ndarray, domain_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per domain: overlap of P(E|D) between two token sets (e.g. train and eval).

    `same` = sum_i min(P_a(i|D), P_b(i|D)); `other_domains` = the mean overlap
    of P_a(.|D) with P_b(.|D') over D' != D, the baseline that shows whether the
    domain's routing pattern carries over rather than any pattern matching.
    """
    pa, pb = p_expert_given_domain(counts_a), p_expert_given_domain(counts_b)
    ov = np.minimum(pa[:, None, :], pb[None, :, :]).sum(axis=-1)  # [D_a, D_b]
    n = len(domain_names)
    out = {}
    for i, name in enumerate(domain_names):
        others = [ov[i, j] for j in range(n) if j != i]
        out[name] = {
            "same": float(ov[i, i]),
            "other_domains": float(np.mean(others)) if others else float("nan"),
        }
    return out
