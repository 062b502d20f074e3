"""Numbers of one run (or of the untrained router) into the results table.

Quality is measured per next-token target and resampled by group: a paired
bootstrap draws the eval groups of each domain with replacement and applies
the same draw to every model, so a difference between two models on the same
targets gets an interval that knows which targets belong together. Routing
numbers of a trained router are printed next to the same numbers of the
untrained one (the upcycled base with its router at initialization, one draw
per router seed): a vocabulary that differs between domains makes any router
that depends on the token look "specialized", trained or not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from moe_emergence.analysis.collect import TokenTable
from moe_emergence.analysis.locality import consecutive_same_expert
from moe_emergence.analysis.results import NAN, Table, interval
from moe_emergence.analysis.specialization import (
    domain_specialization,
    expert_domain_counts,
    p_expert_given_domain,
    point_metrics,
)
from moe_emergence.analysis.token_identity import heldout_predictability, routing_information
from moe_emergence.model.routing_stats import dead_experts, normalized_load_entropy, top_share

# The routing numbers compared with the untrained router, in report order.
SPECIALIZATION = ("mi_ratio", "mean_purity", "max_share", "u_token", "u_domain_given_token",
                  "consecutive_rate")


# --------------------------------------------------------------------------- quality


@dataclass
class GroupBootstrap:
    """Resampling of eval groups within each domain, shared by every model (paired draws).

    `domain` and `group` give each next-token target's domain and group code;
    `weights[d]` is [n_draws, n_groups] multiplicities of a draw.
    """

    domain: np.ndarray  # [M]
    group: np.ndarray  # [M]
    domains: list[str]
    weights: list[np.ndarray]
    groups_of: list[np.ndarray]  # per domain, the group codes it holds

    @classmethod
    def make(cls, tab: TokenTable, n_draws: int, seed: int) -> GroupBootstrap:
        b, t = tab.ids.shape
        domain = np.repeat(tab.block_domain, t - 1)
        group = tab.group.reshape(b, t)[:, 1:].reshape(-1)
        rng = np.random.default_rng(seed)
        weights, groups_of = [], []
        for d in range(len(tab.domain_names)):
            g = np.unique(group[domain == d])
            groups_of.append(g)
            n = len(g)
            draws = rng.integers(0, n, size=(n_draws, n)) if n else np.zeros((n_draws, 0), np.int64)
            w = np.zeros((n_draws, n))
            np.add.at(w, (np.arange(n_draws)[:, None], draws), 1.0)
            weights.append(w)
        return cls(domain, group, list(tab.domain_names), weights, groups_of)

    def n_groups(self) -> dict[str, int]:
        return {d: len(g) for d, g in zip(self.domains, self.groups_of, strict=True)}

    def domain_means(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per domain, the mean of per-target `values` [M] and its draws: ([D], [n_draws, D])."""
        point, draws = [], []
        for d, (g, w) in enumerate(zip(self.groups_of, self.weights, strict=True)):
            sel = self.domain == d
            idx = np.searchsorted(g, self.group[sel])
            s = np.bincount(idx, weights=values[sel], minlength=len(g))
            c = np.bincount(idx, minlength=len(g)).astype(np.float64)
            point.append(s.sum() / max(c.sum(), 1.0))
            draws.append((w @ s) / np.maximum(w @ c, 1.0))
        return np.array(point), np.stack(draws, axis=1)


def add_losses(table: Table, variant: str, seed: int | None, losses: np.ndarray, boot: GroupBootstrap,
               metric: str = "eval_loss") -> None:
    """Per-domain, macro and target-weighted means of per-target losses [M], with group CIs."""
    point, draws = boot.domain_means(losses)
    for d, name in enumerate(boot.domains):
        table.add(variant, f"{metric}_{name}", point[d], seed=seed, ci=interval(draws[:, d]))
    table.add(variant, f"{metric}_macro", point.mean(), seed=seed, ci=interval(draws.mean(axis=1)))
    table.add(variant, metric, float(losses.mean()), seed=seed)


def add_quality(table: Table, losses: Mapping[tuple[str, int], np.ndarray], baselines: Mapping[str, np.ndarray],
                boot: GroupBootstrap, reference: str = "dense") -> None:
    """Every run's eval losses, its margin over the bigram and its difference from `reference`
    (same seed; and pooled over the seeds both have), each with a paired group-bootstrap CI."""
    for name, x in baselines.items():
        add_losses(table, "baselines", None, x, boot, metric=f"{name}_loss")
    bigram = baselines.get("bigram")
    for (variant, seed), x in losses.items():
        add_losses(table, variant, seed, x, boot)
        if bigram is not None:
            add_losses(table, variant, seed, bigram - x, boot, metric="bigram_margin")
    variants = list(dict.fromkeys(v for v, _ in losses))
    for variant in variants:
        seeds = [s for v, s in losses if v == variant]
        if len(seeds) > 1:
            add_losses(table, variant, None, np.mean([losses[(variant, s)] for s in seeds], axis=0), boot)
            if bigram is not None:
                pooled = np.mean([bigram - losses[(variant, s)] for s in seeds], axis=0)
                add_losses(table, variant, None, pooled, boot, metric="bigram_margin")
        if variant in (reference, "base"):
            continue
        paired = [s for s in seeds if (reference, s) in losses]
        for s in paired:
            add_losses(table, variant, s, losses[(variant, s)] - losses[(reference, s)], boot,
                       metric="eval_loss_delta")
        if len(paired) > 1:  # pooled over seeds: the mean difference, groups resampled jointly
            diff = np.mean([losses[(variant, s)] - losses[(reference, s)] for s in paired], axis=0)
            add_losses(table, variant, None, diff, boot, metric="eval_loss_delta")


# --------------------------------------------------------------------------- routing


def layer_numbers(top1: np.ndarray, tab: TokenTable, n_experts: int, min_token_count: int,
                  fmt: Mapping[str, float] | None = None) -> dict[str, float]:
    """The specialization numbers of one layer's top-1 routing, without resampling (cheap:
    what the untrained-router null computes once per router seed)."""
    n_dom = len(tab.domain_names)
    counts = expert_domain_counts(top1, tab.domain, n_experts, n_dom)
    info = routing_information(top1, tab.token_id, tab.domain, n_experts,
                               min_token_count=min_token_count, n_shuffles=0)
    cons = consecutive_same_expert(top1, tab.segment, tab.position, n_experts)
    load = np.bincount(top1, minlength=n_experts)
    out = {
        **point_metrics(counts),
        "u_token": info["u_token"]["value"],
        "u_domain": info["u_domain"]["value"],
        "u_domain_given_token": info["u_domain_given_token"]["value"],
        "consecutive_rate": cons["rate"],
        "top_share": float(top_share(load)),
        "live_experts": float(n_experts - dead_experts(load)),
    }
    for kind, agreement in (fmt or {}).items():
        out[f"format_{kind}"] = agreement
    return out


def add_routing(table: Table, variant: str, seed: int, layer: int, top1: np.ndarray, tab: TokenTable,
                n_experts: int, untrained: Sequence[Mapping[str, float]], params, fmt: Mapping[str, dict],
                step0: Mapping[str, float] | None = None, lb: float | None = None, z: float | None = None) -> dict:
    """Every routing number of one trained layer, each next to its nulls; returns the domain block
    (for the routing matrix) and the held-out block (for the report's token-identity table)."""
    names = list(tab.domain_names)
    dom = domain_specialization(top1, tab.domain, tab.group, n_experts, names,
                                n_permutations=params.n_permutations, n_bootstrap=params.n_bootstrap,
                                seed=params.seed)
    info = routing_information(top1, tab.token_id, tab.domain, n_experts,
                               min_token_count=params.min_token_count, n_shuffles=params.n_shuffles,
                               seed=params.seed)
    held = heldout_predictability(top1, tab.token_id, tab.domain, tab.group, n_experts, seed=params.seed)
    cons = consecutive_same_expert(top1, tab.segment, tab.position, n_experts, domain=tab.domain,
                                   n_domains=len(names))
    load = np.bincount(top1, minlength=n_experts)
    kw = {"seed": seed, "layer": layer}

    def untrained_draws(metric: str) -> list[float]:
        return [u[metric] for u in untrained if metric in u]

    for metric in ("mi_ratio", "max_share", "mean_purity"):
        m = dom[metric]
        table.add(variant, metric, m["value"], ci=(m["ci_low"], m["ci_high"]), null="shuffled",
                  null_stats=(m["null_mean"], m.get("null_p05", NAN), m["null_p95"]), p_value=m["p_value"],
                  chance={"mi_ratio": 0.0, "max_share": 1 / n_experts, "mean_purity": 1 / len(names)}[metric],
                  **kw)
    for metric, null in (("u_token", "token_shuffle"), ("u_domain", "token_shuffle"),
                         ("u_domain_given_token", "domain_within_token")):
        m = info[metric]
        table.add(variant, metric, m["value"], null=null,
                  null_stats=(m.get("null_mean", NAN), NAN, m.get("null_p95", NAN)), **kw)
    table.add(variant, "consecutive_rate", cons["rate"], chance=cons["chance_load"], **kw)
    table.add(variant, "consecutive_domain_chance", cons["chance_domain"], **kw)
    for key in ("majority", "domain", "token", "token_domain"):
        table.add(variant, f"heldout_{key}", held["accuracy"][key], **kw)
    fmt_values = {}
    for kind, agr in fmt.items():
        fmt_values[f"format_{kind}"] = agr["agreement"]
        table.add(variant, f"format_{kind}", agr["agreement"], chance=agr["chance"], **kw)
    if fmt_values:
        table.add(variant, "format_min", min(fmt_values.values()), **kw)
    observed = {**layer_numbers(top1, tab, n_experts, params.min_token_count), **fmt_values}
    if fmt_values:
        observed["format_min"] = min(fmt_values.values())
    for metric in (*SPECIALIZATION, *fmt_values, *(["format_min"] if fmt_values else [])):
        draws = untrained_draws(metric)
        if draws:
            table.add(variant, metric, observed[metric], null="untrained", null_draws=draws, **kw)
    live = float(n_experts - dead_experts(load))
    s0 = step0 or {}
    table.add(variant, "top_share", float(top_share(load)), chance=1 / n_experts, null="step0" if s0 else "",
              null_stats=(s0.get("top_share", NAN), NAN, NAN), **kw)
    table.add(variant, "live_experts", live, null="step0" if s0 else "",
              null_stats=(s0.get("live_experts", NAN), NAN, NAN), **kw)
    table.add(variant, "load_entropy", float(normalized_load_entropy(load)), **kw)
    if lb is not None:
        table.add(variant, "lb_value", lb, chance=1.0, **kw)
    if z is not None:
        table.add(variant, "z_value", z, **kw)
    return {"domain": dom, "heldout": held}


def routing_matrix(top1: np.ndarray, tab: TokenTable, n_experts: int) -> np.ndarray:
    """P(expert | domain) [D, E] on these tokens."""
    return p_expert_given_domain(expert_domain_counts(top1, tab.domain, n_experts, len(tab.domain_names)))
