"""PNG figures of the analysis: each a function of `Results`, listed in `FIGURES`.

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot state, no
display needed) and written through `atomic_path`, so a killed stage never
leaves a half-written PNG. Every figure shows the null it should be read
against: the bigram, the untrained router, step 0, the uniform share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from moe_emergence.analysis.report import LABELS
from moe_emergence.analysis.results import Results, one, select
from moe_emergence.analysis.token_types import TOKEN_TYPES
from moe_emergence.core.atomic import atomic_path

DPI = 130
VARIANT_COLORS = {"base": "#9E9E9E", "dense": "#616161", "moe": "#1565C0", "no_lb": "#C62828", "top2": "#EF6C00",
                  "ghost": "#6A1B9A"}
_FALLBACK = ["#00838F", "#AD1457", "#558B2F", "#4E342E", "#283593", "#F9A825"]


def color(name: str, i: int = 0) -> str:
    return VARIANT_COLORS.get(name, _FALLBACK[i % len(_FALLBACK)])


def _fig(w: float, h: float) -> Figure:
    return Figure(figsize=(w, h), facecolor="white", layout="constrained")


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")


def _axes(fig: Figure, n: int, cols: int = 2, **kw) -> np.ndarray:
    cols = max(1, min(cols, n))
    axes = np.atleast_1d(fig.subplots(math.ceil(n / cols), cols, squeeze=False, **kw)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    return axes[:n]


def heatmap_grid(panels: Mapping[str, tuple[np.ndarray, list[str], list[str]]], path: Path, title: str,
                 label: str, *, vmin: float = 0.0, vmax: float | None = None, cmap: str = "YlOrRd") -> None:
    """Annotated heatmaps on one sheet with a shared scale: panels {title: (matrix, rows, cols)}."""
    ncols = min(2, len(panels))
    n_cols_max = max(m.shape[1] for m, _, _ in panels.values())
    n_rows_max = max(m.shape[0] for m, _, _ in panels.values())
    fig = _fig(max(5.0, 0.62 * n_cols_max + 2.6) * ncols, (0.42 * n_rows_max + 1.5) * math.ceil(len(panels) / ncols) + 0.5)
    axes = _axes(fig, len(panels), ncols)
    top = vmax if vmax is not None else max(float(np.nanmax(np.abs(m))) for m, _, _ in panels.values()) or 1.0
    im = None
    for ax, (name, (m, rows, cols)) in zip(axes, panels.items(), strict=True):
        im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=top, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 * top else "black")
        ax.set_title(name, fontsize=9)
    fig.colorbar(im, ax=axes.tolist(), shrink=0.85).set_label(label)
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


def training_curves(r: Results, path: Path) -> str | None:
    c = r.loss_curves
    if c.empty:
        return None
    fig = _fig(12, 4.2)
    ax, bx = _axes(fig, 2, 2)
    for i, ((v, s), g) in enumerate(c.groupby(["variant", "seed"], sort=False)):
        tr, ev = g[g["split"] == "train"].sort_values("step"), g[g["split"] == "eval"].sort_values("step")
        ax.plot(tr["step"], tr["loss"], color=color(v, i), lw=0.8, alpha=0.4)
        ax.plot(ev["step"], ev["loss"], color=color(v, i), lw=1.6, marker="o", ms=3, label=f"{v} seed {s} eval")
    ax.set(xlabel="training step", ylabel="loss (nats per token)", title="Train (thin) and eval loss")
    ax.legend(fontsize=7, frameon=False)
    t = r.table
    models = [v for v in r.variants if v != "baselines"]
    x = np.arange(len(r.domains))
    width = 0.8 / (len(models) + 1)
    for i, v in enumerate(["bigram", *models]):
        vals = [(one(t, variant="baselines", metric=f"bigram_loss_{d}") if v == "bigram" else
                 select(t, variant=v, metric=f"eval_loss_{d}").dropna(subset=["seed"]).mean(numeric_only=True))["value"]
                for d in r.domains]
        bx.bar(x + (i - len(models) / 2) * width, vals, width, color="#BDBDBD" if v == "bigram" else color(v, i),
               label=f"{v} (counts)" if v == "bigram" else v)
    bx.set_xticks(x, r.domains)
    bx.set(ylabel="final eval loss (nats per token)", title="Final eval loss by domain (seed mean) vs the bigram")
    bx.legend(fontsize=7, frameon=False)
    fig.suptitle("Language-model loss of every model, same vocabulary", fontsize=11)
    _save(fig, path)
    return "Train and eval loss of every run; final eval loss per domain next to the same-vocabulary bigram"


def domain_heatmaps(r: Results, path: Path) -> str | None:
    if r.routing.empty:
        return None
    panels = {}
    for (v, s, layer), g in r.routing.groupby(["variant", "seed", "layer"], sort=False):
        if s != r.seeds(v)[0]:
            continue
        m = g.pivot(index="domain", columns="expert", values="share").reindex(r.domains).to_numpy()
        u = one(r.table, variant=v, seed=s, layer=float(layer), metric="mi_ratio", null="untrained")
        sub = f"\nI(E;D)/H(D) {u['value']:.3f} (untrained {u['null_mean']:.3f})" if u is not None else ""
        panels[f"{v} seed {s}, layer {layer}{sub}"] = (m, r.domains, [f"E{e}" for e in range(m.shape[1])])
    heatmap_grid(panels, path, f"P(expert | domain) on eval (uniform 1/{r.n_experts} = {1 / r.n_experts:.3f})",
                 "P(expert | domain)")
    return "P(expert | domain) on the eval set, every MoE layer (first seed of each variant)"


def against_untrained(r: Results, path: Path) -> str | None:
    rows = select(r.table, null="untrained")
    if rows.empty:
        return None
    metrics = [m for m in LABELS if m in set(rows["metric"])]
    fig = _fig(4.0 * min(4, len(metrics)), 3.4 * math.ceil(len(metrics) / 4))
    for ax, m in zip(_axes(fig, len(metrics), 4), metrics, strict=True):
        g = rows[rows["metric"] == m].reset_index(drop=True)
        labels = [f"{v} s{int(s)} L{int(layer)}" for v, s, layer in zip(g["variant"], g["seed"], g["layer"], strict=True)]
        y = np.arange(len(g))
        ax.barh(y, g["null_p95"] - g["null_p05"], left=g["null_p05"], color="#E0E0E0", label="untrained 5-95%")
        ax.plot(g["null_mean"], y, "|", color="black", ms=12, label="untrained mean")
        ax.plot(g["value"], y, "o", color="#1565C0", label="trained")
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_title(LABELS[m].replace("\\|", "|"), fontsize=9)
    fig.axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle("Trained routers against the untrained router (same base, router at init)", fontsize=11)
    _save(fig, path)
    return "Every specialization number of the trained routers next to the untrained router's range"


def loads(r: Results, path: Path) -> str | None:
    ld = r.loads[(r.loads["where"] == "eval")] if not r.loads.empty else r.loads
    if ld.empty:
        return None
    keys = list(ld.groupby(["variant", "seed", "layer"], sort=False).groups)
    fig = _fig(11, 2.6 * math.ceil(len(keys) / 2) + 0.6)
    for ax, (v, s, layer) in zip(_axes(fig, len(keys), 2, sharey=True), keys, strict=True):
        g = select(ld, variant=v, seed=s, layer=layer)
        for j, when in enumerate(("step0", "final")):
            h = g[g["when"] == when]
            ax.bar(h["expert"] + (j - 0.5) * 0.4, h["share"], 0.4, color=["#BDBDBD", color(v)][j],
                   label="step 0" if when == "step0" else "trained")
        ax.axhline(1 / r.n_experts, color="black", ls=":", lw=1)
        ax.axhline(r.collapse_threshold, color="#C62828", ls="--", lw=1)
        ax.set(title=f"{v} seed {s}, layer {layer}", xlabel="expert", ylabel="share of eval tokens", ylim=(0, 1))
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle("Expert load on eval at step 0 and after training (dotted: uniform; dashed: collapse threshold)",
                 fontsize=11)
    _save(fig, path)
    return "Expert load on the eval set at step 0 and after training, every MoE layer"


def router_over_training(r: Results, path: Path) -> str | None:
    c = r.router_curves
    if c.empty:
        return None
    layers = sorted(c["layer"].unique())
    panels = [("top_share", "top expert's share"), ("live_experts", "live experts"), ("entropy", "router entropy / log E")]
    fig = _fig(4.4 * len(layers) + 0.5, 2.8 * len(panels) + 0.6)
    axes = fig.subplots(len(panels), len(layers), squeeze=False, sharex=True)
    for i, (col, label) in enumerate(panels):
        for j, layer in enumerate(layers):
            ax = axes[i, j]
            for k, ((v, s), g) in enumerate(c[c["layer"] == layer].groupby(["variant", "seed"], sort=False)):
                g = g.sort_values("step")
                ax.plot(g["step"], g[col], marker="o", ms=2, lw=1.2, color=color(v, k), label=f"{v} seed {s}")
            if col == "top_share":
                ax.axhline(r.collapse_threshold, color="#C62828", ls="--", lw=1)
                ax.axhline(1 / r.n_experts, color="black", ls=":", lw=1)
            ax.set(title=f"layer {layer}" if i == 0 else "", ylabel=label if j == 0 else "",
                   xlabel="training step (0: before any update)" if i == len(panels) - 1 else "")
    axes[0, -1].legend(fontsize=7, frameon=False)
    fig.suptitle("Router over training, from step 0 (per logging window of training tokens)", fontsize=11)
    _save(fig, path)
    return "Top-expert share, live experts and router entropy over training, from step 0"


def saturation(r: Results, path: Path) -> str | None:
    s = r.saturation
    if s.empty:
        return None
    fig = _fig(7, 3.6)
    (ax,) = _axes(fig, 1)
    for k, ((v, seed, layer), g) in enumerate(s.groupby(["variant", "seed", "layer"], sort=False)):
        ax.plot(g["step"], g["agreement"], marker="o", color=_FALLBACK[k % len(_FALLBACK)], label=f"{v} s{seed} L{layer}")
        ax.plot(g["step"], g["chance"], ls=":", color=_FALLBACK[k % len(_FALLBACK)])
    ax.set(xlabel="snapshot step", ylabel="agreement with the final routing", ylim=(0, 1),
           title="Router saturation (dotted: chance with the same loads)")
    ax.legend(fontsize=7, frameon=False)
    _save(fig, path)
    return "Router saturation: agreement of each snapshot's routing with the final model's"


def token_types(r: Results, path: Path) -> str | None:
    t = r.token_types
    if t.empty:
        return None
    panels = {}
    for layer, g in t.groupby("layer"):
        g = g.set_index("type").reindex([x for x in TOKEN_TYPES if x in set(g["type"])])
        panels[f"layer {layer}: top expert's share of each type"] = (
            g[["share", "share_all"]].to_numpy(), [f"{x} (E{int(e)})" for x, e in zip(g.index, g["expert"], strict=True)],
            ["share of type", "share of all code"])
    heatmap_grid(panels, path, f"Python token types of code eval tokens ({r.main_variant})", "share", vmax=1.0)
    return f"Python token types of code eval tokens and their top experts ({r.main_variant})"


def knockout(r: Results, path: Path) -> str | None:
    k = r.knockout
    if k.empty:
        return None
    panels = {}
    for layer, g in k.groupby("layer"):
        m = g.pivot(index="expert", columns="domain", values="delta")
        panels[f"layer {layer}"] = (m.to_numpy().T, list(m.columns), [f"E{e}" for e in m.index])
    top = float(np.nanmax(np.abs(k["delta"]))) or 1.0
    heatmap_grid(panels, path, "Change of eval loss with one expert disabled (nats per token)", "loss change",
                 vmin=-top, vmax=top, cmap="RdBu_r")
    return f"Expert knockout ({r.main_variant}): change of eval loss per domain with one expert disabled"


FIGURES: list[tuple[str, Callable[[Results, Path], str | None]]] = [
    ("training_curves.png", training_curves),
    ("domain_heatmaps.png", domain_heatmaps),
    ("against_untrained.png", against_untrained),
    ("loads.png", loads),
    ("router_over_training.png", router_over_training),
    ("saturation.png", saturation),
    ("token_types.png", token_types),
    ("knockout.png", knockout),
]


def draw_all(r: Results, params, directory: Path) -> list[tuple[str, str]]:
    """Draw every figure that has data; (file name, caption) of those drawn."""
    out = []
    for name, draw in FIGURES:
        caption = draw(r, directory / name)
        if caption:
            out.append((name, caption))
    return out
