"""The Markdown report: every sentence and table computed from `results`.

`build_report(results)` writes nothing by hand: each number it prints comes
from `results`, and each specialization number is printed next to its
baseline. Sections whose data is absent are left out, so the stage can fill
what it has.

The `results` schema (JSON-ready; the `analyze` stage fills it)::

    {
      "title": str,                          # optional
      "setup": {label: value, ...},          # optional, printed as a table
      "domains": [str, ...],                 # domain names, in code order
      "n_experts": int,
      "main_variant": str,                   # optional: the MoE variant the prose describes
                                             #   (default "moe" if present, else the first MoE variant)
      "baseline_variant": str,               # optional, default "dense"
      "collapse_threshold": float,           # optional, default 0.6
      "variants": {
        name: {
          "moe": bool,
          "skipped": str,                    # optional: why routing metrics are absent
          "eval": {"step": int, "loss": float, "loss_macro": float,
                   "per_domain": {domain: float}},
          "collapse": {"detected": bool, "step": int, "layer": int, "expert": int,
                       "share": float, "live_experts": int, "reason": str},   # optional
          "layers": {
            "<layer index>": {
              "load": {"fractions": [E], "top_share": float, "entropy": float,  # H(f)/log E
                       "dead": int, "lb": float, "z": float},                 # lb, z optional
              "domain": specialization.domain_specialization(...),
              "heldout": token_identity.heldout_predictability(...),
              "information": token_identity.routing_information(...),
              "consecutive": locality.consecutive_same_expert(...),
              "token_types": token_types.token_type_routing(...),            # optional
              "saturation": agreement.router_saturation(...),               # optional
              "format": {perturbation: agreement.routing_agreement(..., groups=domain)
                         + optional "coverage": float},                       # optional
              "train_eval": {"overlap": agreement.distribution_agreement(...),
                             "transfer": token_identity.transfer_predictability(...)},  # optional
              "knockout": knockout.knockout_summary(...)[layer],             # optional
            }
          }
        }
      },
      "figures": [{"path": str, "caption": str}],   # paths relative to the report
      "notes": [str],                                # optional, printed at the end
    }

Every block is optional except `domains`, `n_experts` and `variants`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}"


def _pct(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return f"{100 * v:.1f}%" if math.isfinite(v) else "n/a"


def _p(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.3f}" if v >= 0.001 else "<0.001"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _layer_keys(layers: Mapping[str, Any]) -> list[str]:
    def key(k: str) -> tuple[int, Any]:
        try:
            return (0, int(k))
        except (TypeError, ValueError):
            return (1, str(k))

    return sorted(layers, key=key)


def _moe_variants(results: Mapping[str, Any]) -> list[str]:
    return [v for v, r in results["variants"].items() if r.get("layers")]


def _main(results: Mapping[str, Any]) -> str | None:
    moe = _moe_variants(results)
    want = results.get("main_variant")
    if want in moe:
        return want
    return "moe" if "moe" in moe else (moe[0] if moe else None)


def _each_layer(
    results: Mapping[str, Any], block: str
) -> Iterable[tuple[str, str, Mapping[str, Any]]]:
    for v in _moe_variants(results):
        layers = results["variants"][v]["layers"]
        for layer in _layer_keys(layers):
            if block in layers[layer]:
                yield v, layer, layers[layer][block]


def _ci(m: Mapping[str, Any]) -> str:
    return f"{_f(m.get('value'))} (95% CI {_f(m.get('ci_low'))}-{_f(m.get('ci_high'))})"


def _null(m: Mapping[str, Any]) -> str:
    return f"{_f(m.get('null_mean'))} (95th pct {_f(m.get('null_p95'))})"


# --------------------------------------------------------------------------- sections


def _section_quality(results: Mapping[str, Any]) -> list[str]:
    variants = {v: r["eval"] for v, r in results["variants"].items() if r.get("eval")}
    if not variants:
        return []
    domains = list(results["domains"])
    base_name = results.get("baseline_variant", "dense")
    base = variants.get(base_name)
    header = ["variant", "step", "eval loss (blocks)", "eval loss (domain mean)"] + [
        f"{d}" for d in domains
    ]
    if base:
        header.append(f"vs {base_name} (domain mean)")
    rows = []
    for v, ev in variants.items():
        row = [v, ev.get("step", "n/a"), _f(ev.get("loss")), _f(ev.get("loss_macro"))]
        row += [_f(ev.get("per_domain", {}).get(d)) for d in domains]
        if base:
            d = _delta(ev.get("loss_macro"), base.get("loss_macro"))
            row.append("-" if v == base_name else (f"{d:+.3f}" if d is not None else "n/a"))
        rows.append(row)
    out = [
        "## Language-model quality",
        "",
        "Eval loss is next-token cross-entropy in nats per token on the held-out eval set at the "
        "final step; the block-weighted mean counts every eval block once, the domain mean every "
        "domain once. Auxiliary losses are not included.",
        "",
        _table(header, rows),
        "",
    ]
    if base:
        for v, ev in variants.items():
            if v == base_name:
                continue
            parts = []
            for d in domains:
                a, b = ev.get("per_domain", {}).get(d), base.get("per_domain", {}).get(d)
                dd = _delta(a, b)
                if dd is not None:
                    parts.append(f"{d} {_f(a)} vs {_f(b)} ({dd:+.3f})")
            dm = _delta(ev.get("loss_macro"), base.get("loss_macro"))
            if dm is not None:
                word = "lower" if dm < 0 else "higher" if dm > 0 else "equal"
                out.append(
                    f"- {v}: domain-mean eval loss {_f(ev.get('loss_macro'))} vs {base_name} "
                    f"{_f(base.get('loss_macro'))} ({dm:+.3f}, {word})"
                    + (f"; per domain: {'; '.join(parts)}." if parts else ".")
                )
        out.append("")
    return out


def _delta(a: Any, b: Any) -> float | None:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    return a - b if math.isfinite(a) and math.isfinite(b) else None


def _section_collapse(results: Mapping[str, Any]) -> list[str]:
    thr = float(results.get("collapse_threshold", 0.6))
    n_exp = int(results["n_experts"])
    rows, sentences = [], []
    for v in _moe_variants(results):
        r = results["variants"][v]
        worst = None
        for layer in _layer_keys(r["layers"]):
            load = r["layers"][layer].get("load")
            if not load:
                continue
            dead = load.get("dead")
            live = n_exp - int(dead) if dead is not None else "n/a"
            rows.append(
                [
                    v,
                    layer,
                    _f(load.get("top_share")),
                    live,
                    _f(load.get("entropy")),
                    _f(load.get("lb")),
                    _f(load.get("z")),
                ]
            )
            if worst is None or float(load.get("top_share", 0)) > worst[1]:
                worst = (layer, float(load.get("top_share", 0)))
        c = r.get("collapse")
        if c and c.get("detected"):
            sentences.append(
                f"- {v}: collapse detected at step {c.get('step')} in layer {c.get('layer')}: "
                f"{c.get('reason') or 'top expert share ' + _f(c.get('share'))} "
                f"(expert {c.get('expert')}, share {_f(c.get('share'))}, {c.get('live_experts')} live experts)."
            )
        elif worst is not None:
            sentences.append(
                f"- {v}: {'no collapse detected' if c else 'no collapse record'}; the largest "
                f"top-expert share on eval is {_f(worst[1])} "
                f"(layer {worst[0]}) against the threshold {_f(thr, 2)} and uniform {_f(1 / n_exp)}."
            )
    if not rows:
        return []
    return [
        "## Load balance and collapse",
        "",
        f"Load on the eval set after training. Uniform top share is 1/{n_exp} = {_f(1 / n_exp)}; "
        f"normalized load entropy H(f)/log E is 1 when balanced, 0 when one expert takes all; "
        f"collapse is a top share above {_f(thr, 2)} (or too few experts receiving tokens) for "
        "consecutive checks during training.",
        "",
        _table(
            [
                "variant",
                "layer",
                "top share",
                "live experts",
                "load entropy",
                "LB value",
                "z value",
            ],
            rows,
        ),
        "",
        *sentences,
        "",
    ]


def _section_domain(results: Mapping[str, Any]) -> list[str]:
    items = list(_each_layer(results, "domain"))
    if not items:
        return []
    n_exp = int(results["n_experts"])
    n_dom = len(results["domains"])
    rows = []
    for v, layer, d in items:
        top_dom = max(d["per_domain"], key=lambda k: d["per_domain"][k]["max_share"])
        td = d["per_domain"][top_dom]
        rows.append(
            [
                v,
                layer,
                _ci(d["mi_ratio"]),
                _null(d["mi_ratio"]),
                _p(d["mi_ratio"].get("p_value")),
                f"{_f(td['max_share'])} ({top_dom} -> E{td['expert']}, lift {_f(td['lift'], 2)}x)",
                _null(d["max_share"]),
                _ci(d["mean_purity"]),
                _null(d["mean_purity"]),
            ]
        )
    out = [
        "## Domain specialization",
        "",
        "I(E;D)/H(D) is the mutual information of top-1 expert and domain under equal domain priors, "
        "as a fraction of the domain entropy log |D| (0: experts carry no domain information, 1: the "
        "expert identifies the domain). Domain purity of an expert is max over domains of P(domain | "
        f"expert) with equal priors (chance 1/{n_dom} = {_f(1 / n_dom)}). Max share is the largest "
        f"P(expert | domain) (uniform 1/{n_exp} = {_f(1 / n_exp)}); lift is max share x {n_exp}. "
        f"Baselines: domain labels shuffled across documents ({_shuffles(items)} shuffles; mean and 95th "
        "percentile; p is the one-sided permutation p-value, at least 1/(shuffles+1)); CIs: 2.5-97.5 "
        "percentiles over documents resampled within each domain.",
        "",
        _table(
            [
                "variant",
                "layer",
                "I(E;D)/H(D)",
                "shuffled labels",
                "p",
                "max share",
                "shuffled",
                "mean purity",
                "shuffled",
            ],
            rows,
        ),
        "",
    ]
    main = _main(results)
    for v, layer, d in items:
        if v != main:
            continue
        m = d["mi_ratio"]
        above = float(m.get("value", float("nan"))) > float(m.get("null_p95", float("nan")))
        out.append(
            f"- layer {layer}: I(E;D)/H(D) = {_ci(m)} vs {_f(m.get('null_mean'))} under shuffled domain "
            f"labels (95th pct {_f(m.get('null_p95'))}); "
            + ("above" if above else "not above")
            + " the shuffled 95th percentile. "
            + "; ".join(
                f"{dom}: E{pd['expert']} takes {_f(pd['max_share'])} of its tokens ({_f(pd['lift'], 2)}x uniform, "
                f"{_f(pd['null_mean'])} shuffled)"
                for dom, pd in d["per_domain"].items()
            )
            + f". Mean purity {_f(d['mean_purity']['value'])} vs chance {_f(1 / n_dom)}."
        )
    out.append("")
    return out


def _shuffles(items: Sequence[tuple[str, str, Mapping[str, Any]]]) -> str:
    ns = sorted({int(d.get("n_permutations", 0)) for _, _, d in items})
    return "/".join(str(n) for n in ns) if ns else "n/a"


def _section_token_identity(results: Mapping[str, Any]) -> list[str]:
    rows, sentences = [], []
    main = _main(results)
    for v in _moe_variants(results):
        layers = results["variants"][v]["layers"]
        for layer in _layer_keys(layers):
            h = layers[layer].get("heldout")
            info = layers[layer].get("information")
            if not h and not info:
                continue
            acc = (h or {}).get("accuracy", {})
            row = [
                v,
                layer,
                _f(acc.get("majority")),
                _f(acc.get("domain")),
                _f(acc.get("token")),
                _f(acc.get("token_domain")),
                _f((h or {}).get("tip_norm")),
            ]
            if info:
                row += [
                    f"{_f(info[k]['value'])} ({_f(info[k].get('null_mean'))})"
                    for k in ("u_token", "u_domain", "u_domain_given_token")
                ]
            else:
                row += ["n/a"] * 3
            rows.append(row)
            if v == main and h:
                s = (
                    f"- layer {layer}: the token id alone predicts {_pct(acc.get('token'))} of held-out routing "
                    f"decisions vs {_pct(acc.get('majority'))} for the majority expert and "
                    f"{_pct(acc.get('domain'))} for the domain alone (it removes {_pct(h.get('tip_norm'))} of the "
                    f"majority baseline's errors); adding the domain gives {_pct(acc.get('token_domain'))} "
                    f"({100 * float(h.get('domain_gain', float('nan'))):+.1f} points)."
                )
                if info:
                    ut, ud, ug = info["u_token"], info["u_domain"], info["u_domain_given_token"]
                    s += (
                        f" The token id explains {_pct(ut['value'])} of routing entropy "
                        f"({_pct(ut.get('null_mean'))} with experts shuffled), the domain {_pct(ud['value'])} "
                        f"({_pct(ud.get('null_mean'))}), and the domain adds {_pct(ug['value'])} beyond the "
                        f"token id ({_pct(ug.get('null_mean'))} with domains shuffled within each token id; "
                        f"ids seen >= {info.get('min_token_count')} times, {_pct(info.get('token_fraction'))} "
                        f"of tokens)."
                    )
                    excess_t = _excess(ut)
                    excess_g = _excess(ug)
                    if excess_g is not None and float(ug["value"]) <= float(
                        ug.get("null_p95", math.inf)
                    ):
                        s += (
                            " What the domain adds is within its shuffled baseline's 95th percentile: "
                            "no evidence that the domain matters once the token id is known."
                        )
                    elif (
                        excess_g is not None
                        and excess_t is not None
                        and excess_g > 0
                        and excess_t > 0
                    ):
                        s += (
                            f" Net of the shuffled baselines, the token id explains {_pct(excess_t)} of routing "
                            f"entropy and the domain adds {_pct(excess_g)}: the token id accounts for "
                            f"{excess_t / excess_g:.1f}x as much."
                        )
                sentences.append(s)
    if not rows:
        return []
    return [
        "## Token identity vs context",
        "",
        "Held-out accuracy: documents are split in two halves (seeded, within each domain); each "
        "key's most frequent expert is fitted on one half and predicts the other, and the halves "
        "swap, so every token is predicted once. Normalized token predictability = (token - "
        "majority) / (1 - majority). U(E|X) = I(E;X)/H(E) is the share of routing entropy the token "
        "id explains, U(E|D) the share the domain explains, U(E|D given X) = I(E;D|X)/H(E) what the "
        "domain adds beyond the token id; in brackets each one's value under shuffling (experts "
        "across tokens; domains within each token id), the size of the plug-in estimation bias.",
        "",
        _table(
            [
                "variant",
                "layer",
                "majority",
                "domain",
                "token id",
                "token id + domain",
                "norm. token predictability",
                "U(E|X)",
                "U(E|D)",
                "U(E|D given X)",
            ],
            rows,
        ),
        "",
        *sentences,
        "",
    ]


def _excess(m: Mapping[str, Any]) -> float | None:
    """A value minus its shuffled-baseline mean (None when either is missing)."""
    d = _delta(m.get("value"), m.get("null_mean"))
    return d


def _section_consecutive(results: Mapping[str, Any]) -> list[str]:
    items = list(_each_layer(results, "consecutive"))
    if not items:
        return []
    rows = [
        [
            v,
            layer,
            _f(c["rate"]),
            _f(c["chance_load"]),
            _f(c["lift_load"], 2) + "x",
            _f(c.get("chance_domain")),
            (_f(c.get("lift_domain"), 2) + "x") if "lift_domain" in c else "n/a",
            f"{c['n_pairs']:,}",
        ]
        for v, layer, c in items
    ]
    main = _main(results)
    sentences = [
        f"- layer {layer}: adjacent tokens share their expert {_pct(c['rate'])} of the time vs "
        f"{_pct(c['chance_load'])} for independent choices with the same loads ({_f(c['lift_load'], 2)}x)"
        + (
            f" and {_pct(c['chance_domain'])} if routing depended on the domain only."
            if "chance_domain" in c
            else "."
        )
        for v, layer, c in items
        if v == main
    ]
    return [
        "## Consecutive tokens",
        "",
        "Rate of adjacent token pairs within a document routed to the same expert; chance is "
        "sum_i f_i^2 of the layer's load fractions; domain chance is sum_D w_D sum_i P(i|D)^2.",
        "",
        _table(
            [
                "variant",
                "layer",
                "same-expert rate",
                "chance (loads)",
                "lift",
                "chance (domain)",
                "lift",
                "pairs",
            ],
            rows,
        ),
        "",
        *sentences,
        "",
    ]


def _section_saturation(results: Mapping[str, Any]) -> list[str]:
    items = [(v, layer, s) for v, layer, s in _each_layer(results, "saturation") if s]
    if not items:
        return []
    rows = [
        [v, layer, r["step"], _f(r["agreement"]), _f(r["chance"])]
        for v, layer, s in items
        for r in s
    ]
    sentences = []
    for v, layer, s in items:
        first, last = s[0], s[-1]
        sentences.append(
            f"- {v} layer {layer}: the snapshot at step {first['step']} routes {_pct(first['agreement'])} of "
            f"tokens as the final model does (chance {_pct(first['chance'])}); at step {last['step']} "
            f"{_pct(last['agreement'])}."
        )
    return [
        "## Router saturation",
        "",
        "Agreement of each saved snapshot's top-1 routing with the final model's on the same eval "
        "tokens; chance is the agreement of independent routers with the same loads.",
        "",
        _table(["variant", "layer", "step", "agreement with final", "chance"], rows),
        "",
        *sentences,
        "",
    ]


def _section_format(results: Mapping[str, Any]) -> list[str]:
    items = list(_each_layer(results, "format"))
    if not items:
        return []
    domains = list(results["domains"])
    rows = []
    for v, layer, f in items:
        for kind, a in f.items():
            per = a.get("per_group", {})
            rows.append(
                [v, layer, kind, f"{_f(a['agreement'])} ({_f(a['chance'])})"]
                + [
                    f"{_f(per[d]['agreement'])} ({_f(per[d]['chance'])})" if d in per else "n/a"
                    for d in domains
                ]
                + [f"{a.get('n_tokens', 0):,}", _pct(a.get("coverage"))]
            )
    main = _main(results)
    sentences = []
    for v, layer, f in items:
        if v != main or not f:
            continue
        lo = min(f, key=lambda k: f[k]["agreement"])
        sentences.append(
            f"- layer {layer}: unchanged content tokens keep their expert under every format change in at "
            f"least {_pct(f[lo]['agreement'])} of cases (lowest: {lo}; chance {_pct(f[lo]['chance'])})."
        )
    return [
        "## Format-artifact test",
        "",
        "The same eval documents routed with their format changed; agreement of the top-1 expert on "
        "the content tokens whose text is unchanged (chance in brackets). High agreement means "
        "content, not format, drives routing.",
        "",
        _table(
            ["variant", "layer", "perturbation", "all"] + domains + ["tokens compared", "coverage"],
            rows,
        ),
        "",
        *sentences,
        "",
    ]


def _section_train_eval(results: Mapping[str, Any]) -> list[str]:
    items = list(_each_layer(results, "train_eval"))
    if not items:
        return []
    out = ["## Eval vs train routing", ""]
    rows = [
        [v, layer, dom, _f(a["same"]), _f(a["other_domains"])]
        for v, layer, te in items
        for dom, a in te.get("overlap", {}).items()
    ]
    if rows:
        out += [
            "Overlap sum_i min(P_train(i|D), P_eval(i|D)) of a domain's expert distribution on train and "
            "eval tokens (1 = identical), against its overlap with the other domains' eval distribution.",
            "",
            _table(
                ["variant", "layer", "domain", "overlap train/eval", "overlap with other domains"],
                rows,
            ),
            "",
        ]
    rows = []
    for v, layer, te in items:
        t = te.get("transfer")
        if not t:
            continue
        h = results["variants"][v]["layers"][layer].get("heldout", {})
        acc, hacc = t["accuracy"], h.get("accuracy", {})
        rows.append(
            [
                v,
                layer,
                _f(acc["majority"]),
                f"{_f(acc['token'])} ({_f(hacc.get('token'))})",
                f"{_f(acc['token_domain'])} ({_f(hacc.get('token_domain'))})",
                _pct(t.get("coverage")),
            ]
        )
    if rows:
        out += [
            "Token-id and (token id, domain) -> expert maps fitted on train tokens, tested on eval tokens; "
            "in brackets the same accuracy within the eval set (two halves of its documents). Similar "
            "numbers mean the routing learned on train carries over to unseen documents.",
            "",
            _table(
                [
                    "variant",
                    "layer",
                    "majority (train-fitted)",
                    "token id",
                    "token id + domain",
                    "eval ids seen in train",
                ],
                rows,
            ),
            "",
        ]
    return out


def _section_token_types(results: Mapping[str, Any]) -> list[str]:
    main = _main(results)
    items = [(v, layer, t) for v, layer, t in _each_layer(results, "token_types") if v == main]
    if not items:
        return []
    rows = []
    for _v, layer, t in items:
        load = t["load"]
        for i, name in enumerate(t["types"]):
            n = t["n_tokens"].get(name, 0)
            if not n:
                continue
            frac = t["fractions"][i]
            e = max(range(len(frac)), key=lambda j: frac[j])
            rows.append(
                [
                    layer,
                    name,
                    f"{n:,}",
                    f"E{e}",
                    _f(frac[e]),
                    _f(load[e]),
                    _f(frac[e] / load[e], 2) + "x" if load[e] else "n/a",
                ]
            )
    return [
        f"## Python token types ({main})",
        "",
        "Code eval tokens labelled by the `tokenize` type of the majority of their characters; the "
        "expert that takes the largest share of each type, against that expert's share of all code "
        "tokens.",
        "",
        _table(
            ["layer", "type", "tokens", "top expert", "share of type", "share of all code", "lift"],
            rows,
        ),
        "",
    ]


def _section_knockout(results: Mapping[str, Any]) -> list[str]:
    items = list(_each_layer(results, "knockout"))
    if not items:
        return []
    rows = [
        [
            v,
            layer,
            f"{_f(k['max_delta'])} (E{k['max_delta_expert']}, {k['max_delta_domain']})",
            _f(k["mean_delta"]),
            f"{_f(k.get('match_rate'))} ({_f(k.get('chance_match'))})",
            _f(k.get("corr_delta_share")),
        ]
        for v, layer, k in items
    ]
    return [
        "## Expert knockout",
        "",
        "Each expert disabled in turn (its tokens go to their next choice); change of eval loss per "
        "domain in nats per token. Match rate: fraction of experts whose most hurt domain is the "
        "domain that routes the most tokens to them (chance in brackets).",
        "",
        _table(
            [
                "variant",
                "layer",
                "largest loss increase",
                "mean change",
                "match rate (chance)",
                "corr(change, routed share)",
            ],
            rows,
        ),
        "",
    ]


def build_report(results: Mapping[str, Any]) -> str:
    """The Markdown report for `results` (schema in the module docstring)."""
    for key in ("domains", "n_experts", "variants"):
        if key not in results:
            raise ValueError(f"analysis results lack `{key}`; the analyze stage must fill it")
    out = [f"# {results.get('title', 'MoE routing analysis')}", ""]
    setup = results.get("setup")
    if setup:
        out += [_table(["setting", "value"], [[k, v] for k, v in setup.items()]), ""]
    skipped = [(v, r["skipped"]) for v, r in results["variants"].items() if r.get("skipped")]
    if skipped:
        out += [f"- {v}: routing metrics skipped ({why})." for v, why in skipped] + [""]
    if not _moe_variants(results):
        out += ["No variant has routing results; routing sections are omitted.", ""]
    for section in (
        _section_quality,
        _section_collapse,
        _section_domain,
        _section_token_identity,
        _section_consecutive,
        _section_saturation,
        _section_format,
        _section_train_eval,
        _section_token_types,
        _section_knockout,
    ):
        out += section(results)
    figs = results.get("figures") or []
    if figs:
        out += ["## Figures", ""]
        for f in figs:
            out += [f"![{f.get('caption', '')}]({f['path']})", "", f"*{f.get('caption', '')}*", ""]
    notes = results.get("notes") or []
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out).rstrip() + "\n"
