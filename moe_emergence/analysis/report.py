"""The Markdown report, written from `Results`: every number comes from its table.

Each claim is stated next to the null that would produce it without any
learning: quality next to a count bigram on the same vocabulary, routing
specialization next to the untrained router, collapse next to the run's own
routing at step 0, a difference between models next to its paired interval
over eval groups. Where the evidence is not there, the verdict says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from moe_emergence.analysis.results import Results, one, select

LABELS = {
    "mi_ratio": "I(E;D)/H(D)", "mean_purity": "mean purity", "max_share": "max share",
    "u_token": "U(E\\|X)", "u_domain_given_token": "U(E\\|D given X)", "consecutive_rate": "same expert, next token",
    "format_min": "format test (lowest)",
}


def f3(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def ci(row: pd.Series | None) -> str:
    if row is None:
        return "-"
    return f"{f3(row['value'])} [{f3(row['ci_low'])}, {f3(row['ci_high'])}]" if not math.isnan(row["ci_low"]) else f3(row["value"])


def md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True) if len(df) else "(nothing to show)"


def seed_label(seed: float) -> str:
    return "pooled" if isinstance(seed, float) and math.isnan(seed) else str(int(seed))


def seed_text(seed: float) -> str:
    return "seeds pooled" if isinstance(seed, float) and math.isnan(seed) else f"seed {int(seed)}"


def runs(t: pd.DataFrame, variants: Iterable[str]) -> list[tuple[str, float]]:
    """(variant, seed) pairs with eval losses, pooled rows last within each variant."""
    out = []
    for v in variants:
        seeds = select(t, variant=v, metric="eval_loss_macro")["seed"].tolist()
        out += [(v, s) for s in sorted(seeds, key=lambda s: (math.isnan(s), s))]
    return out


# --------------------------------------------------------------------------- sections


def quality(r: Results) -> list[str]:
    t, doms = r.table, r.domains
    rows = []
    for name in ("unigram", "bigram"):
        rows.append({"model": f"{name} (counts)", "seed": "-",
                     **{d: f3(one(t, variant="baselines", metric=f"{name}_loss_{d}")["value"]) for d in doms},
                     "macro": f3(one(t, variant="baselines", metric=f"{name}_loss_macro")["value"]),
                     "margin over bigram (macro, 95% CI)": "-"})
    for v, s in runs(t, r.variants):
        if v == "baselines":
            continue
        rows.append({"model": v, "seed": seed_label(s),
                     **{d: f3(one(t, variant=v, seed=s, metric=f"eval_loss_{d}")["value"]) for d in doms},
                     "macro": f3(one(t, variant=v, seed=s, metric="eval_loss_macro")["value"]),
                     "margin over bigram (macro, 95% CI)": ci(one(t, variant=v, seed=s, metric="bigram_margin_macro"))})
    out = ["## Language-model quality", "",
           "Eval loss: next-token cross-entropy in nats per token on the held-out eval set, at each run's last step, "
           "per domain and macro-averaged over domains; auxiliary losses are not included. Losses count only on this "
           "vocabulary: the count baselines are fitted on the same train split in the same ids and scored on the same "
           "targets, so the margin over the bigram (bigram loss minus model loss; positive: the model is better) is the "
           "number that says whether a model learned more than which token follows which. Intervals: 95% paired "
           "bootstrap over eval groups (templates, packages, articles).", "", md(pd.DataFrame(rows)), ""]
    for v in ("base", "dense"):
        for s in select(t, variant=v, metric="bigram_margin_macro")["seed"]:
            worst = min(doms, key=lambda d: one(t, variant=v, seed=s, metric=f"bigram_margin_{d}")["value"])
            mac = one(t, variant=v, seed=s, metric="bigram_margin_macro")
            low = one(t, variant=v, seed=s, metric=f"bigram_margin_{worst}")
            beats = all(one(t, variant=v, seed=s, metric=f"bigram_margin_{d}")["value"] > 0 for d in doms)
            out.append(f"- {v} ({seed_text(s)}): {'beats' if beats else 'does NOT beat'} the same-vocabulary bigram "
                       f"in {'every domain' if beats else 'every domain (' + worst + ': ' + f3(low['value']) + ')'}; "
                       f"macro margin {ci(mac)} nats.")
    deltas = select(t, metric="eval_loss_delta_macro")
    if len(deltas):
        out += ["", "Difference from dense at the same step and seed (variant minus dense; negative: the variant is "
                "better), with 95% paired bootstrap intervals over eval groups; `pooled` averages the seeds' "
                "differences, resampling groups jointly:", ""]
        drows = []
        for _, row in deltas.iterrows():
            v, s = row["variant"], row["seed"]
            drows.append({"variant": v, "seed": seed_label(s),
                          **{d: ci(one(t, variant=v, seed=s, metric=f"eval_loss_delta_{d}")) for d in doms},
                          "macro": ci(row)})
        out += [md(pd.DataFrame(drows)), ""]
        for _, row in deltas.iterrows():
            steps = select(t, variant=row["variant"], metric="steps")["value"]
            dsteps = select(t, variant="dense", metric="steps")["value"]
            unequal = len(steps) and len(dsteps) and set(steps) != set(dsteps)
            verdict = ("no evidence of a difference (the interval includes 0)" if row["ci_low"] <= 0 <= row["ci_high"]
                       else ("better than dense" if row["ci_high"] < 0 else "worse than dense"))
            out.append(f"- {row['variant']} ({seed_text(row['seed'])}): {ci(row)} nats: {verdict}"
                       + ("; NOT at equal steps (the run stopped early), so the difference mixes the schedule in" if unequal else "")
                       + ".")
        spread = deltas.dropna(subset=["seed"]).groupby("variant")["value"]
        for v, vals in spread:
            if len(vals) > 1:
                out.append(f"- {v}: over {len(vals)} seeds the macro difference ranges {f3(vals.min())} to {f3(vals.max())} "
                           f"(mean {f3(vals.mean())}).")
    return out + [""]


def collapse(r: Results) -> list[str]:
    t = r.table
    rows, lines = [], []
    for v, s, layer in r.moe_runs():
        top = one(t, variant=v, seed=s, layer=layer, metric="top_share")
        live = one(t, variant=v, seed=s, layer=layer, metric="live_experts")
        w_top = one(t, variant=v, seed=s, layer=layer, metric="top_share_window0")
        w_live = one(t, variant=v, seed=s, layer=layer, metric="live_experts_window0")
        rows.append({"variant": v, "seed": s, "layer": layer,
                     "step 0 top share (eval)": f3(top["null_mean"]), "step 0 live (eval)": _int(live["null_mean"]),
                     "step 0 top share (1st window)": f3(w_top["value"]) if w_top is not None else "-",
                     "step 0 live (1st window)": _int(w_live["value"]) if w_live is not None else "-",
                     "final top share": f3(top["value"]), "final live": _int(live["value"])})
    lines += [collapse_verdict(r, v, s) for v in r.moe_variants() for s in r.seeds(v)]
    n = r.n_experts
    head = ["## Load balance and collapse, from step 0", "",
            f"Top share: the largest expert's share of a layer's tokens (uniform 1/{n} = {1 / n:.3f}); live: experts "
            f"receiving any token. Step 0 is the upcycled model before any update, on the eval set and on the batches "
            f"of the first logging window; final is the trained model on the eval set. The collapse rule, checked on "
            f"every logging window during training: a top share above {r.collapse_threshold:.2f} or too few live "
            "experts, for consecutive checks. A collapse that is already there at step 0 is the initialization, not "
            "something training did.", ""]
    return head + [md(pd.DataFrame(rows)), ""] + lines + [""]


def _int(x: float) -> str:
    return "-" if x is None or math.isnan(x) else str(int(x))


def collapse_verdict(r: Results, v: str, s: int) -> str:
    t = r.table
    det = one(t, variant=v, seed=s, metric="collapse_detected")
    steps = one(t, variant=v, seed=s, metric="steps")
    healthy0 = all(
        (row := one(t, variant=v, seed=s, layer=layer, metric="live_experts")) is not None
        and row["null_mean"] == r.n_experts
        and one(t, variant=v, seed=s, layer=layer, metric="top_share")["null_mean"] <= r.collapse_threshold
        for layer in r.layers(v))
    start = "healthy at step 0 (every expert live, no top share above the threshold)" if healthy0 else \
        "already unbalanced at step 0"
    finals = "; ".join(
        f"layer {layer}: top share {f3(one(t, variant=v, seed=s, layer=layer, metric='top_share')['value'])}, "
        f"{_int(one(t, variant=v, seed=s, layer=layer, metric='live_experts')['value'])} live"
        for layer in r.layers(v))
    if det is not None and det["value"]:
        c = select(r.collapses, variant=v, seed=s).iloc[0]
        how = "so the collapse developed during training" if healthy0 else \
            "so the rule fired on an imbalance the initialization already had"
        return (f"- {v} (seed {s}): {start}; the collapse rule fired at step {int(c['step'])} in layer {int(c['layer'])} "
                f"({c['reason']}), {how}. At the end: {finals}.")
    return (f"- {v} (seed {s}): {start}; the collapse rule did not fire in {_int(steps['value'] if steps is not None else float('nan'))} "
            f"steps. At the end: {finals}.")


def specialization(r: Results) -> list[str]:
    t = r.table
    rows, lines = [], []
    for v, s, layer in r.moe_runs():
        for metric, label in LABELS.items():
            u = one(t, variant=v, seed=s, layer=layer, metric=metric, null="untrained")
            if u is None:
                continue
            sh = one(t, variant=v, seed=s, layer=layer, metric=metric, null="shuffled")
            rows.append({"variant": v, "seed": s, "layer": layer, "number": label, "trained": f3(u["value"]),
                         "untrained router: mean (5-95%)": f"{f3(u['null_mean'])} ({f3(u['null_p05'])}-{f3(u['null_p95'])})",
                         "trained - untrained": f"{u['value'] - u['null_mean']:+.3f}",
                         "p (untrained)": f"{u['p_value']:.3f}",
                         "95% CI (groups)": f"[{f3(sh['ci_low'])}, {f3(sh['ci_high'])}]" if sh is not None else "-",
                         "shuffled groups: mean (95th)": f"{f3(sh['null_mean'])} ({f3(sh['null_p95'])})" if sh is not None else "-"})
        lines.append(specialization_verdict(t, v, s, layer))
    head = ["## Domain specialization, against an untrained router", "",
            "The untrained router is the same upcycled base with its router at initialization (one draw per router "
            "seed; a run trained with seed s started from draw s). The three domains use different vocabularies, so "
            "any router that depends on the token looks domain-specific: only a trained number above the untrained "
            "range is something training did. I(E;D)/H(D): mutual information of top-1 expert and domain under equal "
            "domain priors over log |D|; purity of an expert: max over domains of P(domain | expert) with equal priors "
            "(chance 1/|D|); max share: the largest P(expert | domain); U(E|X): share of routing entropy the token id "
            "explains; U(E|D given X): what the domain adds beyond the token id; same expert, next token: adjacent "
            "tokens of a document routed alike; format test: routing of unchanged content tokens kept under a format "
            "change. p (untrained) is the rank p-value (1 + #draws at or above the trained value) / (1 + #draws); "
            "the verdict needs p <= 0.05, which takes at least 19 draws. The shuffled-groups null permutes the domain "
            "labels of whole groups: it only shows that routing depends on the tokens.", "", md(pd.DataFrame(rows)), ""]
    return head + lines + [""]


def specialization_verdict(t: pd.DataFrame, v: str, s: int, layer: int) -> str:
    mi = one(t, variant=v, seed=s, layer=layer, metric="mi_ratio", null="untrained")
    add = one(t, variant=v, seed=s, layer=layer, metric="u_domain_given_token", null="untrained")
    if mi is None:
        return f"- {v} (seed {s}) layer {layer}: no untrained-router null was measured."
    above = mi["p_value"] <= 0.05
    below = mi["value"] < mi["null_p05"]
    verdict = ("training made the experts more domain-specific than an untrained router" if above else
               "training made the experts LESS domain-specific than an untrained router" if below else
               "no evidence that training made the experts more domain-specific than an untrained router")
    extra = ""
    if add is not None:
        extra = (f"; the domain adds {f3(add['value'])} of routing entropy beyond the token id "
                 f"({f3(add['null_mean'])} untrained)")
    return (f"- {v} (seed {s}) layer {layer}: I(E;D)/H(D) {f3(mi['value'])} vs {f3(mi['null_mean'])} untrained "
            f"(5-95% {f3(mi['null_p05'])}-{f3(mi['null_p95'])}, p = {mi['p_value']:.3f}): {verdict}{extra}.")


def token_identity(r: Results) -> list[str]:
    t = r.table
    rows = []
    for v, s, layer in r.moe_runs():
        row = {"variant": v, "seed": s, "layer": layer}
        for k in ("majority", "domain", "token", "token_domain"):
            row[k.replace("_", " + ")] = f3(one(t, variant=v, seed=s, layer=layer, metric=f"heldout_{k}")["value"])
        for m, label in (("u_token", "U(E\\|X)"), ("u_domain", "U(E\\|D)"),
                         ("u_domain_given_token", "U(E\\|D given X)")):
            x = select(t, variant=v, seed=s, layer=layer, metric=m)
            x = x[x["null"] != "untrained"].iloc[0]
            row[label] = f"{f3(x['value'])} ({f3(x['null_mean'])})"
        rows.append(row)
    return ["## Token identity vs context", "",
            "Held-out accuracy of predicting a token's top-1 expert: the eval groups are split in two halves within "
            "each domain, each key's most frequent expert is fitted on one half and predicts the other, and the halves "
            "swap. Keys: one global expert (majority), the domain, the token id, both. In brackets after U(...): the "
            "value under shuffling (the plug-in estimation bias).", "", md(pd.DataFrame(rows)), ""]


def consecutive(r: Results) -> list[str]:
    t = r.table
    rows = []
    for v, s, layer in r.moe_runs():
        c = select(t, variant=v, seed=s, layer=layer, metric="consecutive_rate").iloc[0]
        u = one(t, variant=v, seed=s, layer=layer, metric="consecutive_rate", null="untrained")
        d = one(t, variant=v, seed=s, layer=layer, metric="consecutive_domain_chance")
        rows.append({"variant": v, "seed": s, "layer": layer, "same-expert rate": f3(c["value"]),
                     "chance (loads)": f3(c["chance"]), "chance (domain only)": f3(d["value"]),
                     "untrained router": f3(u["null_mean"]) if u is not None else "-"})
    return ["## Consecutive tokens", "",
            "Rate of adjacent token pairs of a document (within one packed block) routed to the same expert; chance "
            "from the loads is sum_i f_i^2, from the domain alone sum_D w_D sum_i P(i|D)^2.", "", md(pd.DataFrame(rows)), ""]


def saturation(r: Results) -> list[str]:
    if r.saturation.empty:
        return []
    df = r.saturation[["variant", "seed", "layer", "step", "agreement", "chance"]].copy()
    df["agreement"], df["chance"] = df["agreement"].map(f3), df["chance"].map(f3)
    return ["## Router saturation", "",
            "Agreement of each saved snapshot's top-1 routing with the final model's on the same eval tokens; chance is "
            "the agreement of independent routers with the same loads.", "", md(df), ""]


def format_test(r: Results) -> list[str]:
    if r.format_test.empty:
        return []
    wide = r.format_test.pivot_table(index=["variant", "seed", "layer", "perturbation"], columns="domain",
                                     values="agreement", sort=False).reset_index()
    for c in wide.columns[4:]:
        wide[c] = wide[c].map(f3)
    return ["## Format-artifact test", "",
            "The same eval documents routed with their format changed; agreement of the top-1 expert on content tokens "
            "whose text is unchanged. The untrained router's value is in the specialization table (format test).", "",
            md(wide), ""]


def train_eval(r: Results) -> list[str]:
    if r.train_eval.empty:
        return []
    df = r.train_eval.copy()
    df["same"], df["other_domains"] = df["same"].map(f3), df["other_domains"].map(f3)
    return ["## Eval vs train routing", "",
            "Overlap sum_i min(P_train(i|D), P_eval(i|D)) of a domain's expert distribution on train and eval tokens "
            "(1 = identical), against its overlap with the other domains' eval distribution.", "",
            md(df.rename(columns={"same": "train/eval overlap", "other_domains": "overlap with other domains"})), ""]


def token_types(r: Results) -> list[str]:
    if r.token_types.empty:
        return []
    df = r.token_types.copy()
    df["lift"] = (df["share"] / df["share_all"]).map(lambda x: f"{x:.2f}x")
    df["expert"] = "E" + df["expert"].astype(str)
    for c in ("share", "share_all"):
        df[c] = df[c].map(f3)
    return [f"## Python token types ({r.main_variant})", "",
            "Code eval tokens labelled by the `tokenize` type of most of their characters; the expert that takes the "
            "largest share of each type, against that expert's share of all code tokens.", "", md(df), ""]


def knockout(r: Results) -> list[str]:
    if r.knockout.empty:
        return []
    k = r.knockout
    rows = []
    for layer, g in k.groupby("layer"):
        worst = g.loc[g["delta"].idxmax()]
        corr = np.corrcoef(g["delta"], g["share"])[0, 1] if g["delta"].std() > 0 and g["share"].std() > 0 else float("nan")
        rows.append({"layer": layer, "largest loss increase": f"{f3(worst['delta'])} (E{int(worst['expert'])}, {worst['domain']})",
                     "mean change": f3(g["delta"].mean()), "corr(change, routed share)": f3(corr)})
    return ["## Expert knockout", "",
            "Each expert disabled in turn (its tokens go to their next choice); change of eval loss per domain in nats "
            "per token. A domain's loss changes more the more of its tokens an expert takes, so a correlation of the "
            "change with the routed share is expected without any functional specialization; no chance level for "
            "'the most hurt domain is the most routed one' is claimed.", "", md(pd.DataFrame(rows)), ""]


def build_report(r: Results) -> str:
    setup = pd.DataFrame({"setting": list(r.setup), "value": list(r.setup.values())})
    parts = ["# MoE routing analysis", "", md(setup), ""]
    parts += quality(r)
    if r.moe_variants():
        parts += collapse(r) + specialization(r) + token_identity(r) + consecutive(r) + saturation(r)
        parts += format_test(r) + train_eval(r) + token_types(r) + knockout(r)
    if r.figures:
        parts += ["## Figures", ""]
        for path, caption in r.figures:
            parts += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    if r.notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in r.notes] + [""]
    return "\n".join(parts).rstrip() + "\n"
