"""The analysis results as data: one tidy table of numbers, plus the arrays behind the figures.

Every number the report, `metrics.json` and the figures show is one row of
`Results.table`:

    variant seed layer metric value ci_low ci_high null null_mean null_p05 null_p95 p_value chance

- `seed` is the training seed of the run; NaN for a number pooled over seeds
  (and for the baselines, which have none).
- `layer` is the transformer layer of a routing number; NaN for a model-level one.
- `ci_low`, `ci_high`: a 95% bootstrap interval over the eval groups (templates,
  packages, articles: the units that are really independent).
- `null` names what the number is compared with, and `null_mean/p05/p95` give
  that null's distribution: `untrained` (the same upcycled base with its router
  at initialization, one draw per router seed), `shuffled` (domain labels of
  whole groups permuted), `token_shuffle` / `domain_within_token` (the plug-in
  bias of an information number), `step0` (the run's own routing before any
  update). A number with several nulls has one row per null. `p_value`: the
  one-sided rank p-value (1 + #draws >= value) / (1 + #draws): with n draws it
  cannot go below 1 / (n + 1).
- `chance`: an analytic reference (uniform share, independent routers with the
  same loads).

The arrays that are not single numbers (routing matrices, curves, knockout
and format tables) live next to the table in `Results`, each a DataFrame or a
small dataclass; `metrics.json` is a pivot of the table, the report's tables
are `to_markdown()` of selections of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = ["variant", "seed", "layer", "metric", "value", "ci_low", "ci_high",
           "null", "null_mean", "null_p05", "null_p95", "p_value", "chance"]
NAN = float("nan")


def interval(draws: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """2.5-97.5 percentiles of the finite draws (NaN when there are none)."""
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    return (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))) if d.size else (NAN, NAN)


def band(draws: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Mean, 5th and 95th percentile of a null's finite draws."""
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not d.size:
        return NAN, NAN, NAN
    return float(d.mean()), float(np.percentile(d, 5)), float(np.percentile(d, 95))


def rank_p(value: float, draws: Sequence[float] | np.ndarray) -> float:
    """One-sided p-value of `value` against a null's draws: (1 + #draws >= value) / (1 + #draws)."""
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    return float((1 + np.sum(d >= value)) / (1 + d.size)) if d.size else NAN


@dataclass
class Table:
    """Rows of numbers, appended as they are measured."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, variant: str, metric: str, value: float, *, seed: int | None = None,
            layer: int | None = None, ci: tuple[float, float] | None = None, null: str = "",
            null_draws: Sequence[float] | np.ndarray | None = None,
            null_stats: tuple[float, float, float] | None = None, p_value: float = NAN,
            chance: float = NAN) -> None:
        nm, n5, n95 = band(null_draws) if null_draws is not None else (null_stats or (NAN, NAN, NAN))
        if null_draws is not None:
            p_value = rank_p(value, null_draws)
        lo, hi = ci if ci is not None else (NAN, NAN)
        self.rows.append({
            "variant": variant, "seed": NAN if seed is None else float(seed),
            "layer": NAN if layer is None else float(layer), "metric": metric,
            "value": float(value), "ci_low": float(lo), "ci_high": float(hi), "null": null,
            "null_mean": nm, "null_p05": n5, "null_p95": n95, "p_value": float(p_value), "chance": float(chance),
        })

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)


def select(df: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """Rows matching every `column=value` (NaN matches NaN; a list matches any of its values)."""
    mask = pd.Series(True, index=df.index)
    for col, want in where.items():
        if isinstance(want, list | tuple | set):
            mask &= df[col].isin(list(want))
        elif want is None or (isinstance(want, float) and math.isnan(want)):
            mask &= df[col].isna()
        else:
            mask &= df[col] == want
    return df[mask]


def one(df: pd.DataFrame, **where: Any) -> pd.Series | None:
    """The single row matching `where`, or None."""
    rows = select(df, **where)
    return None if rows.empty else rows.iloc[0]


@dataclass
class Results:
    """Everything the analyze stage measured (see the module docstring)."""

    table: pd.DataFrame
    domains: list[str]
    n_experts: int
    setup: dict[str, str]
    main_variant: str | None
    collapse_threshold: float
    # variant, seed, layer, domain, expert, share: P(expert | domain) on eval
    routing: pd.DataFrame = field(default_factory=pd.DataFrame)
    # variant, seed, layer, where (eval | train_window), when (step0 | final), expert, share
    loads: pd.DataFrame = field(default_factory=pd.DataFrame)
    # variant, seed, split (train | eval), step, loss
    loss_curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    # variant, seed, layer, step, top_share, live_experts, entropy
    router_curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    # variant, seed, layer, step, agreement, chance
    saturation: pd.DataFrame = field(default_factory=pd.DataFrame)
    # variant, seed, layer, perturbation, domain, agreement, chance, n_tokens, coverage
    format_test: pd.DataFrame = field(default_factory=pd.DataFrame)
    # layer, expert, domain, base_loss, loss, delta, share, reroute_delta
    knockout: pd.DataFrame = field(default_factory=pd.DataFrame)
    # layer, type, n_tokens, expert, share, share_all
    token_types: pd.DataFrame = field(default_factory=pd.DataFrame)
    # variant, seed, layer, domain, same, other_domains
    train_eval: pd.DataFrame = field(default_factory=pd.DataFrame)
    # variant, seed, step, layer, expert, share, reason: collapse records (empty: none detected)
    collapses: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file, caption)

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(self.table["variant"]))

    def moe_variants(self) -> list[str]:
        return list(dict.fromkeys(self.table.loc[self.table["layer"].notna(), "variant"]))

    def layers(self, variant: str | None = None) -> list[int]:
        t = self.table if variant is None else self.table[self.table["variant"] == variant]
        return sorted(int(x) for x in t["layer"].dropna().unique())

    def seeds(self, variant: str) -> list[int]:
        t = self.table[self.table["variant"] == variant]
        return sorted(int(x) for x in t["seed"].dropna().unique())

    def moe_runs(self) -> list[tuple[str, int, int]]:
        """(variant, seed, layer) of every MoE run and layer, in report order."""
        return [(v, s, layer) for v in self.moe_variants() for s in self.seeds(v) for layer in self.layers(v)]
