"""One MoE layer's routing on the eval set, and every per-layer metric of it in one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from moe_emergence.analysis.locality import consecutive_same_expert
from moe_emergence.analysis.specialization import domain_specialization, encode_labels
from moe_emergence.analysis.token_identity import heldout_predictability, routing_information
from moe_emergence.config import AnalyzeParams
from moe_emergence.model.routing_stats import (
    dead_experts,
    load_fractions,
    normalized_load_entropy,
    top_share,
)


@dataclass
class LayerRouting:
    """Aligned per-token arrays [N] of one layer's top-1 routing.

    expert: top-1 expert index; domain: integer codes into the domain names;
    doc: document id (the resampling unit; must be domain-pure); token_id: the
    input token id; position: index of the token within its document (adjacent
    tokens are positions p and p+1 of the same doc).
    """

    expert: np.ndarray
    domain: np.ndarray
    doc: np.ndarray
    token_id: np.ndarray
    position: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.expert)
        for name in ("domain", "doc", "token_id", "position"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"routing arrays must be aligned: expert has {n} tokens, {name} has {len(getattr(self, name))}"
                )


def load_summary(expert: np.ndarray, n_experts: int) -> dict[str, Any]:
    """Load fractions, top share, normalized load entropy and dead experts of a routing."""
    counts = np.bincount(np.asarray(expert, dtype=np.int64), minlength=n_experts)
    return {
        "fractions": [float(x) for x in load_fractions(counts)],
        "top_share": float(top_share(counts)),
        "entropy": float(normalized_load_entropy(counts)),
        "dead": int(dead_experts(counts)),
    }


def analyze_layer(
    routing: LayerRouting, n_experts: int, domains: Sequence[str], params: AnalyzeParams
) -> dict[str, Any]:
    """The per-layer blocks of the report's `results` schema: load, domain, heldout, information, consecutive."""
    codes, names = encode_labels(routing.domain, domains)
    if routing.expert.size == 0:
        raise ValueError(
            "no routed tokens for this layer: the eval set is empty or max_eval_blocks is 0"
        )
    return {
        "load": load_summary(routing.expert, n_experts),
        "domain": domain_specialization(
            routing.expert,
            codes,
            routing.doc,
            n_experts,
            names,
            n_permutations=params.n_permutations,
            n_bootstrap=params.n_bootstrap,
            seed=params.seed,
        ),
        "heldout": heldout_predictability(
            routing.expert, routing.token_id, codes, routing.doc, n_experts, seed=params.seed
        ),
        "information": routing_information(
            routing.expert,
            routing.token_id,
            codes,
            n_experts,
            min_token_count=params.min_token_count,
            n_shuffles=params.n_shuffles,
            seed=params.seed,
        ),
        "consecutive": consecutive_same_expert(
            routing.expert,
            routing.doc,
            routing.position,
            n_experts,
            domain=codes,
            n_domains=len(names),
        ),
    }
