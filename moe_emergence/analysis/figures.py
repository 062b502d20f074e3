"""PNG figures of the analysis, one function each: plain data in, a file out.

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot state, no
display needed) and written through `atomic_path`, so a killed stage never
leaves a half-written PNG. Every figure carries a title, axis labels with
units, a legend where several series share axes, and the baseline it should
be read against (uniform share, chance, shuffled-label band, threshold).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from moe_emergence.atomic import atomic_path

DPI = 150
DOMAIN_COLORS = {"code": "#2196F3", "math": "#FF9800", "prose": "#4CAF50"}
VARIANT_COLORS = {
    "dense": "#616161",
    "moe": "#1565C0",
    "no_lb": "#C62828",
    "top2": "#EF6C00",
    "ghost": "#6A1B9A",
}
_FALLBACK = ["#00838F", "#AD1457", "#558B2F", "#4E342E", "#283593", "#F9A825"]
HEATMAP_CMAP = "YlOrRd"


def variant_color(name: str, i: int = 0) -> str:
    return VARIANT_COLORS.get(name, _FALLBACK[i % len(_FALLBACK)])


def domain_color(name: str, i: int = 0) -> str:
    return DOMAIN_COLORS.get(name, _FALLBACK[i % len(_FALLBACK)])


def _new(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, facecolor="white", layout="constrained")
    return fig


def _tidy(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
    return path


def _grid(n: int, max_cols: int = 2) -> tuple[int, int]:
    cols = min(max_cols, max(n, 1))
    return math.ceil(max(n, 1) / cols), cols


def _heat_vmax(tables: Sequence[np.ndarray], floor: float) -> float:
    top = max([float(np.nanmax(t)) for t in tables if np.size(t)] + [floor])
    return min(1.0, math.ceil(top * 10 - 1e-9) / 10)


def _annotated_heatmap(
    ax,
    data: np.ndarray,
    rows: Sequence[str],
    cols: Sequence[str],
    vmax: float,
    *,
    cmap: str = HEATMAP_CMAP,
    vmin: float = 0.0,
    fmt: str = ".2f",
    fontsize: int = 8,
):
    """A heatmap with every finite cell's value printed; dark cells get white text."""
    im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = data[i, j]
            if np.isfinite(v):
                ax.text(
                    j,
                    i,
                    f"{v:{fmt}}",
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if abs(v) > 0.6 * vmax else "black",
                )
    return im


def plot_domain_heatmaps(
    tables: Mapping[str, np.ndarray | Sequence[Sequence[float]]],
    domains: Sequence[str],
    path: str | Path,
    *,
    title: str = "Expert routing by domain",
    subtitles: Mapping[str, str] | None = None,
) -> Path:
    """One annotated heatmap per MoE layer of P(expert | domain) on one sheet, shared scale.

    `tables[layer_label]` is [D, E] (rows in `domains` order).
    """
    arrs = {k: np.asarray(v, dtype=float) for k, v in tables.items()}
    n_exp = next(iter(arrs.values())).shape[1] if arrs else 1
    nrows, ncols = _grid(len(arrs))
    fig = _new((max(5.0, 0.7 * n_exp + 2.0) * ncols, (0.45 * len(domains) + 1.6) * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    vmax = _heat_vmax(list(arrs.values()), floor=2.0 / n_exp)
    im = None
    for ax, (label, t) in zip(axes, arrs.items(), strict=False):
        im = _annotated_heatmap(
            ax, t, [d for d in domains], [f"E{i}" for i in range(t.shape[1])], vmax
        )
        sub = (subtitles or {}).get(label)
        ax.set_title(f"{label}" + (f"\n{sub}" if sub else ""), fontsize=10)
        ax.set_xlabel("expert")
    for ax in axes[len(arrs) :]:
        ax.set_visible(False)
    if im is not None:
        cb = fig.colorbar(im, ax=axes[: len(arrs)].tolist(), shrink=0.9)
        cb.set_label("P(expert | domain)")
    fig.suptitle(f"{title}\n(uniform routing = 1/{n_exp} = {1 / n_exp:.3f} per cell)", fontsize=11)
    return _save(fig, path)


def plot_lb_comparison(
    loads: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    *,
    labels: Mapping[str, str] | None = None,
    title: str = "Expert load with and without load balancing",
) -> Path:
    """Per MoE layer, grouped bars of each variant's expert load fractions on the eval set.

    `loads[variant][layer_label]` is the [E] load vector; `labels` renames
    variants in the legend (e.g. {"moe": "with LB", "no_lb": "without LB"}).
    """
    variants = list(loads)
    layers = list(dict.fromkeys(layer for v in variants for layer in loads[v]))
    n_exp = len(next(iter(next(iter(loads.values())).values())))
    nrows, ncols = _grid(len(layers))
    fig = _new((max(5.5, 0.6 * n_exp + 2) * ncols, 3.4 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=True)).ravel()
    width = 0.8 / max(len(variants), 1)
    x = np.arange(n_exp)
    for ax, layer in zip(axes, layers, strict=False):
        for i, v in enumerate(variants):
            if layer not in loads[v]:
                continue
            f = np.asarray(loads[v][layer], dtype=float)
            name = (labels or {}).get(v, v)
            ax.bar(
                x + (i - (len(variants) - 1) / 2) * width,
                f,
                width,
                color=variant_color(v, i),
                label=f"{name} (top share {f.max():.2f})",
            )
        ax.axhline(1 / n_exp, color="black", ls="--", lw=1, label=f"uniform 1/{n_exp}")
        ax.set_xticks(x, [f"E{i}" for i in range(n_exp)])
        ax.set_ylim(0, 1)
        ax.set_title(layer, fontsize=10)
        ax.set_xlabel("expert")
        ax.set_ylabel("share of eval tokens")
        ax.legend(fontsize=8, frameon=False, loc="upper right")
        _tidy(ax)
    for ax in axes[len(layers) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_collapse_trajectory(
    trajectory: pd.DataFrame,
    path: str | Path,
    *,
    n_experts: int,
    threshold: float,
    collapse_step: int | None = None,
    variant: str = "no_lb",
) -> Path:
    """Top-expert share and live experts over training steps, one line per layer.

    `trajectory` columns: step, layer, top_share, live_experts.
    """
    fig = _new((11, 3.8))
    ax_s, ax_l = fig.subplots(1, 2)
    for i, (layer, g) in enumerate(trajectory.sort_values("step").groupby("layer", sort=True)):
        color = _FALLBACK[i % len(_FALLBACK)]
        ax_s.plot(g["step"], g["top_share"], marker="o", ms=3, color=color, label=f"layer {layer}")
        ax_l.plot(
            g["step"], g["live_experts"], marker="o", ms=3, color=color, label=f"layer {layer}"
        )
    ax_s.axhline(
        threshold, color="#C62828", ls="--", lw=1.2, label=f"collapse threshold {threshold:g}"
    )
    ax_s.axhline(1 / n_experts, color="black", ls=":", lw=1, label=f"uniform 1/{n_experts}")
    ax_s.set_ylim(0, 1.02)
    ax_s.set_ylabel("top expert's share of tokens")
    ax_l.set_ylim(0, n_experts + 0.5)
    ax_l.set_yticks(range(0, n_experts + 1, max(1, n_experts // 8)))
    ax_l.axhline(n_experts, color="black", ls=":", lw=1, label=f"all {n_experts} experts")
    ax_l.set_ylabel("live experts (receiving tokens)")
    for ax in (ax_s, ax_l):
        if collapse_step is not None:
            ax.axvline(
                collapse_step,
                color="#C62828",
                lw=1,
                alpha=0.6,
                label=f"collapse detected (step {collapse_step})",
            )
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, frameon=False)
        _tidy(ax)
    ax_s.set_title("Top-expert share", fontsize=10)
    ax_l.set_title("Live experts", fontsize=10)
    fig.suptitle(f"Collapse trajectory: {variant}", fontsize=11)
    return _save(fig, path)


def plot_router_over_training(
    curves: pd.DataFrame,
    path: str | Path,
    *,
    metrics: Sequence[tuple[str, str]] = (
        ("entropy", "router entropy / log E"),
        ("top_share", "top expert share"),
    ),
    threshold: float | None = None,
    n_experts: int | None = None,
    entropy_max: float = 1.0,
    title: str = "Router statistics over training",
) -> Path:
    """Rows: metrics; columns: MoE layers; one line per variant.

    `curves` columns: variant, step, layer, and each metric column. An
    `entropy` column gets a reference line at `entropy_max` (1 for entropy
    divided by log E, log E for entropy in nats); `top_share` gets the
    collapse threshold and the uniform share.
    """
    layers = sorted(curves["layer"].unique(), key=str)
    variants = list(dict.fromkeys(curves["variant"]))
    fig = _new((4.6 * len(layers) + 0.6, 3.0 * len(metrics) + 0.6))
    axes = fig.subplots(len(metrics), len(layers), squeeze=False, sharex=True)
    for r, (col, label) in enumerate(metrics):
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            sub = curves[curves["layer"] == layer]
            for i, v in enumerate(variants):
                g = sub[sub["variant"] == v].sort_values("step")
                if col in g and g[col].notna().any():
                    ax.plot(
                        g["step"],
                        g[col],
                        marker="o",
                        ms=2.5,
                        lw=1.4,
                        color=variant_color(v, i),
                        label=v,
                    )
            if col == "top_share":
                if threshold is not None:
                    ax.axhline(
                        threshold,
                        color="#C62828",
                        ls="--",
                        lw=1,
                        label=f"collapse threshold {threshold:g}",
                    )
                if n_experts:
                    ax.axhline(
                        1 / n_experts, color="black", ls=":", lw=1, label=f"uniform 1/{n_experts}"
                    )
                ax.set_ylim(0, 1.02)
            if col == "entropy":
                ax.axhline(
                    entropy_max, color="black", ls=":", lw=1, label="maximum (uniform router)"
                )
                ax.set_ylim(0, entropy_max * 1.05)
            if r == 0:
                ax.set_title(f"layer {layer}", fontsize=10)
            if c == 0:
                ax.set_ylabel(label)
            if r == len(metrics) - 1:
                ax.set_xlabel("training step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            _tidy(ax)
        axes[r, -1].legend(fontsize=8, frameon=False, loc="best")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_token_type_routing(
    tables: Mapping[str, np.ndarray | Sequence[Sequence[float]]],
    types: Sequence[str],
    path: str | Path,
    *,
    n_tokens: Mapping[str, int] | None = None,
    title: str = "Python token types: routing of code eval tokens",
) -> Path:
    """One annotated heatmap per layer: rows token types, columns experts, cells P(expert | type)."""
    arrs = {k: np.asarray(v, dtype=float) for k, v in tables.items()}
    n_exp = next(iter(arrs.values())).shape[1] if arrs else 1
    rows = [f"{t} (n={n_tokens[t]:,})" if n_tokens and t in n_tokens else t for t in types]
    nrows, ncols = _grid(len(arrs))
    fig = _new((max(5.5, 0.7 * n_exp + 3.0) * ncols, (0.42 * len(types) + 1.4) * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    vmax = _heat_vmax(list(arrs.values()), floor=2.0 / n_exp)
    im = None
    for ax, (label, t) in zip(axes, arrs.items(), strict=False):
        im = _annotated_heatmap(ax, t, rows, [f"E{i}" for i in range(t.shape[1])], vmax)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("expert")
    for ax in axes[len(arrs) :]:
        ax.set_visible(False)
    if im is not None:
        cb = fig.colorbar(im, ax=axes[: len(arrs)].tolist(), shrink=0.9)
        cb.set_label("P(expert | token type)")
    fig.suptitle(f"{title}\n(uniform routing = 1/{n_exp} = {1 / n_exp:.3f} per cell)", fontsize=11)
    return _save(fig, path)


def plot_training_curves(
    curves: pd.DataFrame,
    final: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    title: str = "Language-model loss of every variant",
) -> Path:
    """Left: loss over steps (train thin, eval with markers). Right: final eval loss per domain.

    `curves` columns: variant, step, split ("train" / "eval"), loss.
    `final[variant][domain]` is the final eval loss (nats per token).
    """
    fig = _new((12, 4.2))
    ax_c, ax_b = fig.subplots(1, 2, width_ratios=[1.4, 1])
    variants = list(dict.fromkeys(list(curves["variant"]) + list(final)))
    for i, v in enumerate(variants):
        color = variant_color(v, i)
        g = curves[curves["variant"] == v].sort_values("step")
        tr, ev = g[g["split"] == "train"], g[g["split"] == "eval"]
        if len(tr):
            ax_c.plot(tr["step"], tr["loss"], color=color, lw=0.9, alpha=0.45)
        if len(ev):
            ax_c.plot(
                ev["step"], ev["loss"], color=color, lw=1.8, marker="o", ms=4, label=f"{v} eval"
            )
    ax_c.plot([], [], color="grey", lw=0.9, alpha=0.45, label="train (thin lines)")
    ax_c.set_xlabel("training step")
    ax_c.set_ylabel("cross-entropy loss (nats per token)")
    ax_c.set_title("Train and eval loss", fontsize=10)
    ax_c.legend(fontsize=8, frameon=False)
    _tidy(ax_c)

    domains = list(dict.fromkeys(d for v in final for d in final[v]))
    fin_vars = [v for v in variants if v in final]
    width = 0.8 / max(len(fin_vars), 1)
    x = np.arange(len(domains))
    lo = min((final[v][d] for v in fin_vars for d in final[v]), default=0.0)
    hi = max((final[v][d] for v in fin_vars for d in final[v]), default=1.0)
    for i, v in enumerate(fin_vars):
        vals = [final[v].get(d, np.nan) for d in domains]
        bars = ax_b.bar(
            x + (i - (len(fin_vars) - 1) / 2) * width,
            vals,
            width,
            color=variant_color(v, variants.index(v)),
            label=v,
        )
        for b, val in zip(bars, vals, strict=True):
            if np.isfinite(val):
                ax_b.text(
                    b.get_x() + b.get_width() / 2,
                    val,
                    f"{val:.2f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                )
    ax_b.set_xticks(x, domains)
    span = max(hi - lo, 1e-6)
    ax_b.set_ylim(max(0.0, lo - 0.3 * span), hi + 0.25 * span)
    ax_b.set_ylabel("final eval loss (nats per token)")
    ax_b.set_title("Final eval loss by domain (y axis does not start at 0)", fontsize=10)
    ax_b.legend(fontsize=8, frameon=False)
    _tidy(ax_b)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_specialization_baselines(
    rows: pd.DataFrame,
    path: str | Path,
    *,
    title: str = "Specialization against its baselines",
) -> Path:
    """One panel per metric; a bar per (variant, layer) with its bootstrap CI, the shuffled band and chance.

    `rows` columns: metric (panel title), label (bar name, e.g. "moe L2"),
    value, and optionally ci_low, ci_high (bootstrap 95% CI), null_mean,
    null_p95 (permutation/shuffle baseline), chance (a reference line), variant
    (for the colour).
    """
    metrics = list(dict.fromkeys(rows["metric"]))
    nrows, ncols = _grid(len(metrics), max_cols=2)
    n_bars = rows.groupby("metric").size().max() if len(rows) else 1
    fig = _new((max(5.0, 0.75 * n_bars + 2.5) * ncols, 3.3 * nrows + 1.0))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    handles: dict[str, object] = {}
    for ax, metric in zip(axes, metrics, strict=False):
        g = rows[rows["metric"] == metric].reset_index(drop=True)
        x = np.arange(len(g))
        names = g["variant"] if "variant" in g else g["label"]
        colors = [variant_color(str(v), i) for i, v in enumerate(names)]
        handles["observed value"] = ax.bar(x, g["value"], 0.55, color=colors, zorder=2)
        if "null_p95" in g:
            for i in range(len(g)):
                p95 = g["null_p95"].iloc[i]
                if p95 is None or not np.isfinite(p95):
                    continue
                handles["shuffled baseline, up to its 95th pct"] = ax.fill_between(
                    [i - 0.42, i + 0.42], 0, p95, color="#9E9E9E", alpha=0.45, lw=0, zorder=1
                )
                m = g["null_mean"].iloc[i] if "null_mean" in g else None
                if m is not None and np.isfinite(m):
                    handles["shuffled baseline mean"] = ax.hlines(
                        m, i - 0.42, i + 0.42, color="#212121", lw=1.6, zorder=3
                    )
        if {"ci_low", "ci_high"} <= set(g):
            ok = g["ci_low"].notna() & g["ci_high"].notna()
            if ok.any():
                v = g.loc[ok, "value"]
                yerr = [
                    (v - g.loc[ok, "ci_low"]).clip(lower=0),
                    (g.loc[ok, "ci_high"] - v).clip(lower=0),
                ]
                handles["95% bootstrap CI"] = ax.errorbar(
                    x[ok.to_numpy()],
                    v,
                    yerr=yerr,
                    fmt="none",
                    ecolor="black",
                    capsize=4,
                    lw=1.2,
                    zorder=4,
                )
        if "chance" in g and g["chance"].notna().any():
            handles["chance (uniform)"] = ax.axhline(
                float(g["chance"].dropna().iloc[0]), color="black", ls="--", lw=1, zorder=3
            )
        tops = [g["value"].to_numpy(float)]
        for col in ("ci_high", "null_p95"):
            if col in g:
                tops.append(g[col].to_numpy(float))
        top = float(np.nanmax(np.concatenate(tops))) if len(g) else 1.0
        ax.set_ylim(0, max(0.02, top * 1.15))
        ax.set_xticks(
            x, g["label"], rotation=30 if len(g) > 4 else 0, ha="right" if len(g) > 4 else "center"
        )
        ax.set_title(metric, fontsize=10)
        ax.set_ylabel("fraction")
        _tidy(ax)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncols=min(5, len(handles)),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        f"{title}\n(bar colour = variant; grey = the same number with labels/experts shuffled)",
        fontsize=11,
    )
    return _save(fig, path)


def plot_token_identity(
    rows: pd.DataFrame,
    path: str | Path,
    *,
    title: str = "Held-out routing prediction: what a token id and the domain explain",
) -> Path:
    """Grouped bars per (variant, layer): held-out accuracy of majority, domain, token, token+domain.

    `rows` columns: label, majority, domain, token, token_domain.
    """
    keys = [
        ("majority", "majority expert (baseline)", "#BDBDBD"),
        ("domain", "domain's modal expert", "#8D6E63"),
        ("token", "token id's modal expert", "#1E88E5"),
        ("token_domain", "token id + domain", "#3949AB"),
    ]
    fig = _new((max(6.0, 1.3 * len(rows) + 2.5), 4.2))
    ax = fig.subplots()
    x = np.arange(len(rows))
    width = 0.8 / len(keys)
    for i, (k, name, color) in enumerate(keys):
        vals = rows[k].to_numpy(float)
        bars = ax.bar(x + (i - 1.5) * width, vals, width, color=color, label=name)
        for b, v in zip(bars, vals, strict=True):
            ax.text(
                b.get_x() + b.get_width() / 2,
                v + 0.01,
                f"{v:.2f}",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(x, rows["label"])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("held-out accuracy (fraction of tokens)")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, frameon=False, ncols=2, loc="upper left")
    _tidy(ax)
    return _save(fig, path)


def plot_saturation(
    curves: pd.DataFrame,
    path: str | Path,
    *,
    title: str = "Router saturation: agreement of each snapshot with the final model's routing",
) -> Path:
    """One panel per layer: agreement with the final routing over snapshot steps, a line per variant.

    `curves` columns: variant, layer, step, agreement, and optionally chance
    (drawn dotted in the variant's colour).
    """
    layers = sorted(curves["layer"].unique(), key=str)
    variants = list(dict.fromkeys(curves["variant"]))
    fig = _new((4.8 * len(layers) + 0.5, 4.4))
    axes = fig.subplots(1, len(layers), squeeze=False, sharey=True)[0]
    handles: dict[str, object] = {}
    for ax, layer in zip(axes, layers, strict=True):
        sub = curves[curves["layer"] == layer].sort_values("step")
        for i, v in enumerate(variants):
            g = sub[sub["variant"] == v]
            if not len(g):
                continue
            color = variant_color(str(v), i)
            (handles[f"{v}"],) = ax.plot(g["step"], g["agreement"], marker="o", ms=4, color=color)
            if "chance" in g:
                (handles[f"{v}: chance"],) = ax.plot(
                    g["step"], g["chance"], ls=":", lw=1.2, marker="x", ms=4, color=color
                )
        ax.set_ylim(0, 1.02)
        ax.set_title(f"layer {layer}", fontsize=10)
        ax.set_xlabel("training step of the snapshot")
        steps = sorted(sub["step"].unique())
        if len(steps) <= 12:
            ax.set_xticks(steps)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _tidy(ax)
    axes[0].set_ylabel("tokens routed as by the final model")
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncols=min(4, max(len(handles), 1)),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(f"{title}\n(chance: independent routers with the same loads)", fontsize=11)
    return _save(fig, path)


def plot_format_agreement(
    rows: pd.DataFrame,
    path: str | Path,
    *,
    title: str = "Format-artifact test: same expert for unchanged content tokens",
) -> Path:
    """Bars of agreement per perturbation (groups) and domain (colours), chance as a black tick.

    `rows` columns: perturbation, domain, agreement, chance, and optionally
    panel (e.g. "moe layer 2", one panel each).
    """
    panels = list(dict.fromkeys(rows["panel"])) if "panel" in rows else [None]
    perts = list(dict.fromkeys(rows["perturbation"]))
    domains = list(dict.fromkeys(rows["domain"]))
    fig = _new(((1.5 * len(perts) + 1.5) * len(panels) + 0.5, 4.3))
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    width = 0.8 / max(len(domains), 1)
    handles: dict[str, object] = {}
    for ax, panel in zip(axes, panels, strict=True):
        sub = rows if panel is None else rows[rows["panel"] == panel]
        for j, d in enumerate(domains):
            g = sub[sub["domain"] == d].set_index("perturbation").reindex(perts)
            xs = np.arange(len(perts)) + (j - (len(domains) - 1) / 2) * width
            handles[d] = ax.bar(xs, g["agreement"], width * 0.95, color=domain_color(d, j))
            handles["chance agreement"] = ax.hlines(
                g["chance"], xs - width / 2, xs + width / 2, color="black", lw=1.8
            )
            for x, v in zip(xs, g["agreement"], strict=True):
                if np.isfinite(v):
                    ax.text(x, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(np.arange(len(perts)), perts)
        ax.set_ylim(0, 1.08)
        ax.set_xlabel("format perturbation")
        if panel is not None:
            ax.set_title(str(panel), fontsize=10)
        _tidy(ax)
    axes[0].set_ylabel("same top-1 expert (fraction of tokens)")
    handles["chance agreement"] = handles.pop("chance agreement")  # last in the legend
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncols=len(handles),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


# --------------------------------------------------------------------------- from the results schema


def _layer_items(results: Mapping, block: str):
    for v, r in results["variants"].items():
        for layer in sorted(r.get("layers") or {}, key=lambda k: (len(str(k)), str(k))):
            if block in r["layers"][layer]:
                yield v, layer, r["layers"][layer][block]


def specialization_rows(results: Mapping) -> pd.DataFrame:
    """Rows for `plot_specialization_baselines` from a report `results` dict (see report.py)."""
    rows = []
    n_dom = len(results["domains"])
    for v, layer, d in _layer_items(results, "domain"):
        label = f"{v} L{layer}"
        for key, name, chance in (
            ("mi_ratio", "I(E;D)/H(D)", None),
            ("mean_purity", "mean domain purity (equal priors)", 1 / n_dom),
            ("max_share", "max P(expert | domain)", 1 / results["n_experts"]),
        ):
            m = d[key]
            rows.append(
                {
                    "metric": name,
                    "label": label,
                    "variant": v,
                    "value": m["value"],
                    "ci_low": m["ci_low"],
                    "ci_high": m["ci_high"],
                    "null_mean": m["null_mean"],
                    "null_p95": m["null_p95"],
                    "chance": chance,
                }
            )
    for v, layer, info in _layer_items(results, "information"):
        for key, name in (
            ("u_token", "U(E|X): routing entropy explained by token id"),
            ("u_domain_given_token", "U(E|D given X): added by the domain"),
        ):
            m = info[key]
            rows.append(
                {
                    "metric": name,
                    "label": f"{v} L{layer}",
                    "variant": v,
                    "value": m["value"],
                    "null_mean": m.get("null_mean"),
                    "null_p95": m.get("null_p95"),
                    "chance": None,
                }
            )
    return pd.DataFrame(rows)


def token_identity_rows(results: Mapping) -> pd.DataFrame:
    """Rows for `plot_token_identity`."""
    return pd.DataFrame(
        [
            {"label": f"{v} L{layer}", **h["accuracy"]}
            for v, layer, h in _layer_items(results, "heldout")
        ]
    )


def format_rows(results: Mapping, variant: str) -> pd.DataFrame:
    """Rows for `plot_format_agreement` of one variant, a panel per layer."""
    return pd.DataFrame(
        [
            {
                "panel": f"{v} layer {layer}",
                "perturbation": kind,
                "domain": dom,
                "agreement": g["agreement"],
                "chance": g["chance"],
            }
            for v, layer, fmt in _layer_items(results, "format")
            if v == variant
            for kind, a in fmt.items()
            for dom, g in a.get("per_group", {}).items()
        ]
    )


def plot_knockout(
    table: pd.DataFrame,
    domains: Sequence[str],
    path: str | Path,
    *,
    variant: str = "moe",
) -> Path:
    """One heatmap per layer: change of eval loss per domain (rows) with each expert (columns) disabled.

    `table` is `knockout.knockout_table` output (columns layer, expert, domain,
    delta, and optionally share). A box marks, for each expert, the domain that
    routes the largest share of its tokens to it: damage that is domain-selective
    where the routing is falls inside the boxes.
    """
    from matplotlib.patches import Rectangle

    layers = sorted(table["layer"].unique())
    doms = [d for d in domains if d in set(table["domain"])]
    n_exp = int(table["expert"].max()) + 1 if len(table) else 1
    nrows, ncols = _grid(len(layers))
    fig = _new((max(7.0, 0.75 * n_exp + 2.2) * ncols, (0.5 * len(doms) + 1.7) * nrows + 0.9))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    lim = float(np.nanmax(np.abs(table["delta"]))) if len(table) else 1.0
    lim = lim if lim > 0 else 1.0
    digits = 2 if lim >= 0.1 else 3 if lim >= 0.01 else 4
    im = None
    for ax, layer in zip(axes, layers, strict=False):
        g = table[table["layer"] == layer]
        delta = g.pivot(index="domain", columns="expert", values="delta").reindex(
            index=doms, columns=range(n_exp)
        )
        data = delta.to_numpy(float)
        im = _annotated_heatmap(
            ax, data, doms, [f"E{i}" for i in range(n_exp)], lim,
            cmap="RdBu_r", vmin=-lim, fmt=f"+.{digits}f", fontsize=7,
        )
        if "share" in g:
            share = g.pivot(index="domain", columns="expert", values="share").reindex(
                index=doms, columns=range(n_exp)
            )
            idle = []
            for j in range(n_exp):
                col = share[j].to_numpy(float)
                if np.nansum(col) > 0:
                    i = int(np.nanargmax(col))
                    ax.add_patch(
                        Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.6, ec="black")
                    )
                else:
                    idle.append(j)
            ax.set_xticks(
                range(n_exp),
                [f"E{j}" + ("\n(no tokens)" if j in idle else "") for j in range(n_exp)],
            )
        ax.set_title(f"layer {layer}", fontsize=10)
        ax.set_xlabel("disabled expert")
    for ax in axes[len(layers) :]:
        ax.set_visible(False)
    if im is not None:
        cb = fig.colorbar(im, ax=axes[: len(layers)].tolist(), shrink=0.9)
        cb.set_label("change of eval loss (nats per token)")
    fig.suptitle(
        f"Expert knockout ({variant}): change of eval loss per domain, one expert disabled at a time\n"
        "(its tokens go to their next choice; box: the domain that routes the largest\n"
        "share of its tokens to the expert)",
        fontsize=11,
    )
    return _save(fig, path)
