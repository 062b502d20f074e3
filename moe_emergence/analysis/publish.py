"""Write what the analyze stage measured: metrics, tables, curves, figures, the report.

`metrics.json` is a pivot of the results table (seed means, the names DVC
compares across experiments), `table.tsv` the whole table, the curve TSVs the
arrays behind the DVC plots, and the report reads the same table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from moe_emergence.analysis import figures
from moe_emergence.analysis.report import build_report
from moe_emergence.analysis.results import Results, one, select
from moe_emergence.core.atomic import atomic_dir, atomic_path, write_json, write_text
from moe_emergence.core.config import Params

FIGURES = "figures"
CURVES = "analysis/curves"
METRICS = "analysis/metrics.json"
TABLE = "analysis/table.tsv"
REPORT = "report.md"

# Per layer: (metric, null, what metrics.json calls its value, its null's mean, its null's 95th pct)
LAYER_METRICS = [
    ("mi_ratio", "shuffled", "mi_ratio", "mi_ratio_shuffled", None),
    ("mi_ratio", "untrained", None, "mi_ratio_untrained", "mi_ratio_untrained_p95"),
    ("mean_purity", "untrained", "mean_purity", "mean_purity_untrained", None),
    ("max_share", "untrained", "max_share", "max_share_untrained", None),
    ("u_token", "untrained", "u_token", "u_token_untrained", None),
    ("u_domain_given_token", "untrained", "u_domain_given_token", "u_domain_given_token_untrained", None),
    ("consecutive_rate", "untrained", "consecutive_rate", "consecutive_rate_untrained", None),
    ("format_min", "untrained", "format_agreement_min", None, None),
    ("top_share", "step0", "top_share", "top_share_step0", None),
    ("live_experts", "step0", "live_experts", "live_experts_step0", None),
]


def _mean(rows: pd.DataFrame, col: str) -> float | None:
    v = rows[col].dropna()
    return float(v.mean()) if len(v) else None


def _put(d: dict, key: str, value: float | None) -> None:
    if value is not None and math.isfinite(value):
        d[key] = round(value, 6)


def metrics_summary(r: Results) -> dict[str, Any]:
    """The numbers `dvc metrics show` / `dvc exp show` compare: seed means per variant and layer."""
    t = r.table
    out: dict[str, Any] = {"baselines": {}}
    for m in ("bigram_loss_macro", "unigram_loss_macro", *(f"bigram_loss_{d}" for d in r.domains)):
        _put(out["baselines"], m, _mean(select(t, variant="baselines", metric=m), "value"))
    for v in r.variants:
        if v == "baselines":
            continue
        d: dict[str, Any] = {}
        per_seed = t[(t["variant"] == v) & t["seed"].notna()]
        for m in ("eval_loss_macro", *(f"eval_loss_{x}" for x in r.domains), "bigram_margin_macro"):
            _put(d, m, _mean(select(per_seed, metric=m, layer=None), "value"))
        delta = one(t, variant=v, seed=None, metric="eval_loss_delta_macro")
        if delta is None:
            delta = one(per_seed, metric="eval_loss_delta_macro")
        if delta is not None:
            for key, col in (("", "value"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high")):
                _put(d, f"eval_loss_macro_delta{key}", float(delta[col]))
        col = select(per_seed, metric="collapse_detected")
        if len(col):
            _put(d, "collapse_detected", float(col["value"].max()))
            _put(d, "collapse_step", _mean(select(per_seed, metric="collapse_step"), "value"))
        for layer in r.layers(v):
            ld: dict[str, Any] = {}
            for metric, null, name, null_name, p95_name in LAYER_METRICS:
                rows = select(per_seed, metric=metric, layer=float(layer), null=null)
                if name:
                    _put(ld, name, _mean(rows, "value"))
                if null_name:
                    _put(ld, null_name, _mean(rows, "null_mean"))
                if p95_name:
                    _put(ld, p95_name, _mean(rows, "null_p95"))
            if "live_experts_step0" in ld:
                ld["dead_experts_step0"] = r.n_experts - ld["live_experts_step0"]
            if "live_experts" in ld:
                ld["dead_experts"] = r.n_experts - ld["live_experts"]
            d[f"layer{layer}"] = ld
        out[v] = d
    return out


def write_curves(r: Results, directory: Path) -> None:
    """TSVs behind the DVC plots, long format with a `series` label per line, so that the top-level
    plots of dvc.yaml (template `.dvc/plots/series.json`) follow `run_variants`, `seeds` and the MoE
    layers of any profile; and P(expert | domain) per run, with layer and expert in one label."""
    if not r.loss_curves.empty:
        c = r.loss_curves.assign(series=r.loss_curves["variant"] + " seed" + r.loss_curves["seed"].astype(str))
        for split, g in c.groupby("split"):
            g.rename(columns={"loss": "lm_loss"})[["step", "series", "lm_loss"]].to_csv(
                directory / f"{split}_lm_loss.tsv", sep="\t", index=False, float_format="%.6g")
    if not r.router_curves.empty:
        c = r.router_curves
        c = c.assign(series=c["variant"] + " seed" + c["seed"].astype(str) + " layer" + c["layer"].astype(str))
        cols = [k for k in ("top_share", "token_entropy", "live_experts") if k in c]
        c[["step", "series", *cols]].to_csv(directory / "router.tsv", sep="\t", index=False, float_format="%.6g")
    if not r.routing.empty:
        for (v, s), g in r.routing.groupby(["variant", "seed"]):
            wide = g.assign(expert=g["layer"].map(lambda x: f"L{x}") + ".E" + g["expert"].astype(str)).pivot(
                index="expert", columns="domain", values="share").reset_index()
            wide.to_csv(directory / f"routing_{v}_seed{s}.tsv", sep="\t", index=False, float_format="%.6g")
    if not r.saturation.empty:
        r.saturation.to_csv(directory / "saturation.tsv", sep="\t", index=False, float_format="%.6g")
    if not r.knockout.empty:
        r.knockout.to_csv(directory / "knockout.tsv", sep="\t", index=False, float_format="%.6g")


def publish(r: Results, params: Params, out: Path, clock: Callable[[str], None]) -> None:
    """Write figures, curve tables, the results table, metrics and the report, each whole or not at all."""
    with atomic_dir(out / FIGURES) as tmp:
        r.figures = [(f"{FIGURES}/{name}", caption) for name, caption in figures.draw_all(r, params, tmp)]
    clock(f"{len(r.figures)} figures in {out / FIGURES}")
    with atomic_dir(out / CURVES) as tmp:
        write_curves(r, tmp)
    with atomic_path(out / TABLE) as tmp:
        r.table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    write_json(out / METRICS, metrics_summary(r))
    write_text(out / REPORT, build_report(r))
    clock(f"wrote {out / REPORT}, {out / METRICS}, {out / TABLE}, {out / CURVES}")


def one_line_summary(r: Results, seconds: float, out: Path = Path("reports")) -> str:
    """`analyze: ...`: eval losses against the bigram, the main variant's specialization against untrained."""
    t = r.table
    parts = []
    big = one(t, variant="baselines", metric="bigram_loss_macro")
    if big is not None:
        parts.append(f"bigram {big['value']:.3f}")
    for v in r.variants:
        rows = select(t, variant=v, metric="eval_loss_macro")
        rows = rows[rows["seed"].notna()]
        if v != "baselines" and len(rows):
            parts.append(f"{v} {rows['value'].mean():.3f}")
    if r.main_variant:
        for layer in r.layers(r.main_variant):
            rows = select(t, variant=r.main_variant, layer=float(layer), metric="mi_ratio", null="untrained")
            if len(rows):
                parts.append(f"{r.main_variant} L{layer} I(E;D)/H(D) {rows['value'].mean():.3f} "
                             f"(untrained {rows['null_mean'].mean():.3f})")
    return f"analyze: eval loss (macro) {'; '.join(parts)}; {out / REPORT} in {seconds:.0f} s"
