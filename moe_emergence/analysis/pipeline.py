"""The analyze stage's work: trained variants in, `reports/` out.

`run_analysis` loads every variant (dense and `run_variants`) with its
training summary, routes the packed eval set through each MoE variant, fills
the report's `results` dict (schema in report.py) with the metric functions of
this package, and publishes figures, curve tables, a compact metrics file and
the Markdown report. Nothing is written until every number is computed, and
each output is written whole or not at all.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moe_emergence.analysis import collect, figures
from moe_emergence.analysis.agreement import (
    distribution_agreement,
    router_saturation,
    routing_agreement,
)
from moe_emergence.analysis.knockout import knockout_summary, knockout_table
from moe_emergence.analysis.layer import LayerRouting, analyze_layer
from moe_emergence.analysis.locality import consecutive_same_expert
from moe_emergence.analysis.report import build_report
from moe_emergence.analysis.specialization import expert_domain_counts
from moe_emergence.analysis.token_identity import transfer_predictability
from moe_emergence.analysis.token_types import TOKEN_TYPES, token_type_routing
from moe_emergence.atomic import atomic_dir, write_json, write_text
from moe_emergence.config import ModelParams, Params
from moe_emergence.model.checkpoint import CheckpointError, load_model
from moe_emergence.model.gpt2 import moe_layers

FIGURES = "figures"
CURVES = "analysis/curves"
METRICS = "analysis/metrics.json"
RESULTS = "analysis/results.json"
REPORT = "report.md"


@dataclass
class Paths:
    packed: Path = Path("data/packed")
    sampled: Path = Path("data/sampled")
    models: Path = Path("models")
    train_reports: Path = Path("reports/train")
    out: Path = Path("reports")


def _log(msg: str) -> None:
    print(f"analyze: {msg}", file=sys.stderr, flush=True)


def train_stage(variant: str) -> str:
    """The `dvc repro` target that makes a variant's model and metrics."""
    return "train_dense" if variant == "dense" else f"train@{variant}"


# --------------------------------------------------------------------------- inputs


@dataclass
class Variant:
    name: str
    moe: bool
    model_params: ModelParams
    model: Any
    summary: dict[str, Any]  # reports/train/<v>/metrics.json
    events: dict[str, Any]  # models/<v>/events.json (empty when absent)
    model_dir: Path
    report_dir: Path


def check_sidecar(
    side: Mapping[str, Any], directory: Path, variant: str, mp: ModelParams, moe: bool
) -> None:
    """Raise CheckpointError when a checkpoint's sidecar disagrees with what params.yaml says it is."""
    problems = []
    cfg = side.get("gpt2_config") or {}
    if mp.init == "scratch":
        for key in ("n_layer", "n_embd", "n_head", "n_positions"):
            want, got = getattr(mp.arch, key), cfg.get(key)
            if got != want:
                problems.append(f"{key} is {got}, params.yaml model.arch.{key} is {want}")
    spec = side.get("moe")
    if moe and spec is None:
        problems.append("it is a dense model, but the variant is a MoE variant")
    elif not moe and spec is not None:
        problems.append("it has MoE layers, but the variant is dense")
    elif moe:
        checks = (
            ("moe_layers", sorted(spec.get("moe_layers", [])), sorted(mp.moe_layers)),
            ("n_experts", spec.get("n_experts"), mp.n_experts),
            ("top_k", spec.get("top_k"), mp.top_k),
            ("ghost_experts", spec.get("ghost_experts"), mp.ghost_experts),
        )
        problems += [
            f"{k} is {got}, params.yaml says {want}" for k, got, want in checks if got != want
        ]
    saved_as = (side.get("extra") or {}).get("variant")
    if saved_as is not None and saved_as != variant:
        problems.append(f"it was saved as variant {saved_as!r}")
    if problems:
        raise CheckpointError(
            f"{directory / 'model.json'} does not match params.yaml for variant {variant!r}: "
            f"{'; '.join(problems)}. The model is stale: run `dvc repro {train_stage(variant)}`"
        )


def load_variant(params: Params, name: str, paths: Paths) -> Variant:
    """A trained variant's final model and training summary; errors name the stage that makes them."""
    stage = train_stage(name)
    model_dir = paths.models / name
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"{model_dir} not found: variant {name!r} is not trained; run `dvc repro {stage}`"
        )
    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{model_dir / 'model.safetensors'} not found: the checkpoint of variant {name!r} is missing; "
            f"run `dvc repro {stage}`"
        )
    mp, _ = params.variant(name)
    moe = params.is_moe(name)
    model, side = load_model(model_dir)
    check_sidecar(side, model_dir, name, mp, moe)
    report_dir = paths.train_reports / name
    summary_path = report_dir / "metrics.json"
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"{summary_path} not found: the training summary of variant {name!r} is missing; "
            f"run `dvc repro {stage}`"
        )
    summary = json.loads(summary_path.read_text())
    events_path = model_dir / "events.json"
    events = json.loads(events_path.read_text()) if events_path.is_file() else {}
    return Variant(name, moe, mp, model, summary, events, model_dir, report_dir)


def snapshot_dirs(model_dir: Path) -> dict[int, Path]:
    """Model snapshots saved during training, by step."""
    out = {}
    for d in sorted((model_dir / "snapshots").glob("step_*")):
        m = re.fullmatch(r"step_(\d+)", d.name)
        if m and (d / "model.safetensors").is_file():
            out[int(m.group(1))] = d
    return out


def read_sampled(sampled: Path, split: str = "eval") -> dict[str, dict[str, str]]:
    """{domain: {doc_id: text}} of one split of the sampled documents."""
    from moe_emergence.data.documents import domain_files, read_docs

    out: dict[str, dict[str, str]] = {}
    for domain, path in domain_files(sampled, "sample").items():
        t = read_docs(path, "sample", columns=["doc_id", "text", "split"])
        keep = np.asarray(t.column("split").to_pylist()) == split
        ids = np.asarray(t.column("doc_id").to_pylist(), dtype=object)[keep]
        texts = np.asarray(t.column("text").to_pylist(), dtype=object)[keep]
        out[domain] = dict(zip(ids.tolist(), texts.tolist(), strict=True))
    return out


def read_curve(report_dir: Path, name: str) -> pd.DataFrame | None:
    """A DVCLive series `name` (e.g. "train/lm_loss") as columns step, value; None when not logged."""
    p = report_dir / "plots" / "metrics" / f"{name}.tsv"
    if not p.is_file():
        return None
    df = pd.read_csv(p, sep="\t")
    col = name.rsplit("/", 1)[-1]
    if "step" not in df or col not in df:
        return None
    return pd.DataFrame({"step": df["step"].astype(int), "value": df[col].astype(float)})


# --------------------------------------------------------------------------- per variant


def _eval_block(summary: Mapping[str, Any], domains: list[str]) -> dict[str, Any]:
    ev = summary.get("eval") or {}
    return {
        "step": summary.get("steps"),
        "loss": ev.get("lm_loss"),
        "loss_macro": ev.get("lm_loss_macro"),
        "per_domain": {d: ev[f"lm_loss_{d}"] for d in domains if f"lm_loss_{d}" in ev},
    }


def _collapse_block(v: Variant) -> dict[str, Any]:
    rec = dict(v.events.get("collapse") or {})
    if not rec:
        c = v.summary.get("collapse") or {}
        rec = {
            k: c.get(k) for k in ("detected", "step", "layer", "expert", "share", "live_experts")
        }
    rec["detected"] = bool(rec.get("detected"))
    return rec


def _layer_results(
    routed: collect.Routed, tab: collect.TokenTable, n_experts: int, params: Params
) -> dict[str, dict[str, Any]]:
    out = {}
    names = tab.domain_names
    for block in sorted(routed.experts):
        top1 = routed.top1(block)
        m = analyze_layer(
            LayerRouting(top1, tab.domain, tab.doc, tab.token_id, tab.position),
            n_experts,
            names,
            params.analyze,
        )
        m["load"]["lb"], m["load"]["z"] = routed.lb.get(block), routed.z.get(block)
        # Adjacent pairs within one block only: across a block boundary the second token was
        # routed without the first in its context.
        m["consecutive"] = consecutive_same_expert(
            top1, tab.segment, tab.position, n_experts, domain=tab.domain, n_domains=len(names)
        )
        out[str(block)] = m
    return out


def _n_experts(model: Any) -> int:
    return max(layer.n_experts for _, layer in moe_layers(model))


class Clock:
    """Progress lines with the seconds each step took."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.last = log, time.perf_counter()

    def __call__(self, msg: str) -> None:
        now = time.perf_counter()
        self.log(f"{msg} ({now - self.last:.1f} s)")
        self.last = now


@dataclass
class EvalContext:
    """What every per-variant measurement reads: the eval tokens, the params, the device, progress."""

    tab: collect.TokenTable
    params: Params
    device: Any
    clock: Clock

    @property
    def domains(self) -> list[str]:
        return self.tab.domain_names


def _each_layer(layers: dict[str, dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(int(b), r) for b, r in layers.items()]


def add_saturation(
    layers: dict, v: Variant, routed: collect.Routed, n_experts: int, ctx: EvalContext
) -> None:
    """Agreement of every earlier snapshot's routing with the final model's, per layer."""
    final_step = int(v.summary.get("steps") or -1)
    snaps: dict[int, dict[int, np.ndarray]] = {}
    for step, d in snapshot_dirs(v.model_dir).items():
        if step >= final_step:
            continue  # the final model itself
        model, _ = load_model(d)
        snaps[step] = collect.route(
            model.to(ctx.device), ctx.tab.ids, ctx.params.analyze.batch_size
        ).experts
    if not snaps:
        return
    for block, res in _each_layer(layers):
        k = routed.experts[block].shape[1]
        res["saturation"] = router_saturation(
            {s: e[block][:, :k] for s, e in snaps.items()}, routed.experts[block], n_experts
        )
    ctx.clock(f"{v.name}: saturation over {len(snaps)} snapshots")


def add_train_eval(
    layers: dict,
    v: Variant,
    routed: collect.Routed,
    train: collect.TokenTable,
    n_experts: int,
    ctx: EvalContext,
) -> None:
    """Per layer: overlap of per-domain expert distributions and transfer of the token map, train -> eval."""
    tr = collect.route(v.model, train.ids, ctx.params.analyze.batch_size)
    n_dom, tab = len(ctx.domains), ctx.tab
    for block, res in _each_layer(layers):
        te, ee = tr.top1(block), routed.top1(block)
        res["train_eval"] = {
            "overlap": distribution_agreement(
                expert_domain_counts(te, train.domain, n_experts, n_dom),
                expert_domain_counts(ee, tab.domain, n_experts, n_dom),
                ctx.domains,
            ),
            "transfer": transfer_predictability(
                (te, train.token_id, train.domain), (ee, tab.token_id, tab.domain), n_experts
            ),
        }
    ctx.clock(f"{v.name}: routed {train.n_tokens:,} train tokens for the eval-vs-train comparison")


def add_format_test(
    layers: dict,
    v: Variant,
    encoder: collect.Encoder,
    docs: list[tuple[int, str]],
    eos_id: int,
    n_experts: int,
    ctx: EvalContext,
) -> None:
    """Per layer and perturbation: routing agreement on unchanged content tokens, by domain."""
    ap = ctx.params.analyze
    kinds = ap.format_perturbations
    fr = collect.format_routing(
        v.model, encoder, docs, kinds, ap.format_prefix, ctx.tab.ids.shape[1], eos_id, ap.batch_size
    )
    for block, res in _each_layer(layers):
        res["format"] = {
            kind: {
                **routing_agreement(
                    fr.original[block][kind],
                    fr.perturbed[block][kind],
                    n_experts,
                    groups=fr.domain[kind],
                    group_names=ctx.domains,
                ),
                "coverage": fr.coverage[kind],
            }
            for kind in kinds
        }
    ctx.clock(f"{v.name}: format-artifact test on {len(docs)} documents")


def add_token_types(
    layers: dict,
    v: Variant,
    routed: collect.Routed,
    encoder: collect.Encoder,
    code_texts: Mapping[str, str],
    n_experts: int,
    ctx: EvalContext,
) -> str:
    """Per layer: routing of code eval tokens by Python token type; returns a note on the coverage."""
    types, stats = collect.code_token_types(encoder, code_texts, ctx.tab, ctx.domains.index("code"))
    typed = types >= 0
    if typed.any():
        for block, res in _each_layer(layers):
            res["token_types"] = token_type_routing(
                types[typed], routed.top1(block)[typed], n_experts
            )
    ctx.clock(f"{v.name}: Python token types")
    return (
        f"Python token types: {int(typed.sum()):,} code eval tokens typed from {stats['docs']} "
        f"documents ({stats['partial']} that `tokenize` could not finish keep the types found before "
        f"the error; {stats['unmatched']} left out because their text was missing or re-tokenized "
        "differently)."
    )


def add_knockout(layers: dict, v: Variant, ctx: EvalContext) -> tuple[pd.DataFrame, str]:
    """Per layer: the knockout summary; returns the per-(layer, expert, domain) table and a note."""
    ap, tab, domains = ctx.params.analyze, ctx.tab, ctx.domains
    sel = collect.select_blocks(tab.block_domain, ap.knockout_blocks, ap.seed, per_domain=True)
    present = [d for i, d in enumerate(domains) if (tab.block_domain[sel] == i).any()]
    base, knocked = collect.knockout_losses(
        v.model, tab.ids[sel], tab.block_domain[sel], domains, ap.batch_size
    )
    rows = [domains.index(d) for d in present]
    shares = {
        b: np.asarray(res["domain"]["p_expert_given_domain"])[rows]
        for b, res in _each_layer(layers)
    }
    table = knockout_table(base, knocked, shares, present)
    summary = knockout_summary(table)
    for b, res in layers.items():
        if b in summary:
            res["knockout"] = summary[b]
    ctx.clock(f"{v.name}: knockout of {len(knocked)} experts on {len(sel)} blocks")
    note = (
        f"Expert knockout on {len(sel)} eval blocks ({', '.join(present)}; equal numbers per domain "
        "where the eval set has them), against the intact model's losses on the same blocks."
    )
    return table, note


# --------------------------------------------------------------------------- the analysis


def run_analysis(
    params: Params, paths: Paths | None = None, log: Callable[[str], None] = _log
) -> dict[str, Any]:
    """Analyze dense + run_variants and publish reports; returns the `results` dict."""
    import torch

    from moe_emergence.data.packed import load_packed
    from moe_emergence.data.tokenizer import load_tokenizer

    paths = paths or Paths()
    ap = params.analyze
    clock = Clock(log)
    variants = {v: load_variant(params, v, paths) for v in ["dense", *params.run_variants]}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for v in variants.values():
        v.model.to(device)
    clock(f"loaded {len(variants)} variants: {', '.join(variants)}")

    eval_path = paths.packed / "eval.arrow"
    evals = load_packed(eval_path)
    domains = list(evals.meta.get("domains") or sorted(set(evals.domains)))
    block_size = evals.block_size
    for v in variants.values():
        if block_size > v.model.config.n_positions:
            raise CheckpointError(
                f"{v.model_dir}: the model's context ({v.model.config.n_positions}) is shorter than the "
                f"packed blocks ({block_size}, pack.block_size); re-run `dvc repro {train_stage(v.name)}`"
            )
    rows = collect.select_blocks(
        collect.domain_codes(evals.domains, domains, str(eval_path)), ap.max_eval_blocks, ap.seed
    )
    tab = collect.token_table(evals, rows, domains, str(eval_path))
    clock(
        f"eval set: {len(rows)} blocks x {block_size} tokens = {tab.n_tokens:,} tokens, "
        f"{len(tab.doc_ids)} documents"
    )
    ctx = EvalContext(tab, params, device, clock)

    moe_names = [v for v in params.run_variants if variants[v].moe]
    main = (
        ap.main_variant if ap.main_variant in moe_names else (moe_names[0] if moe_names else None)
    )
    notes: list[str] = []
    if main is not None and main != ap.main_variant:
        notes.append(
            f"analyze.main_variant {ap.main_variant!r} is not among the trained MoE variants; "
            f"the prose describes {main!r}."
        )
    if not moe_names:
        notes.append(
            "No MoE variant is listed in `run_variants`: every routing metric is skipped, "
            "and the report covers language-model quality only."
        )
    results: dict[str, Any] = {
        "domains": domains,
        "n_experts": params.model.n_experts,
        "main_variant": main,
        "baseline_variant": "dense",
        "collapse_threshold": params.train.collapse_threshold,
        "variants": {},
        "notes": notes,
    }
    for name, v in variants.items():
        entry: dict[str, Any] = {"moe": v.moe, "eval": _eval_block(v.summary, domains)}
        if v.moe:
            entry["collapse"] = _collapse_block(v)
        else:
            entry["skipped"] = "dense model: it has no router, so it has LM-quality numbers only"
        results["variants"][name] = entry

    # The eval documents' text: the format test and the code token types read it.
    encoder, texts = None, {}
    if moe_names and (ap.format_docs > 0 or "code" in domains):
        texts = read_sampled(paths.sampled, "eval")
        encoder = collect.Encoder(load_tokenizer(evals.meta.get("tokenizer", "embedded")))
    format_docs = _format_documents(texts, domains, ap.format_docs, ap.seed)
    train_tab = None
    if moe_names and ap.train_blocks > 0:
        train_path = paths.packed / "train.arrow"
        train = load_packed(train_path)
        picked = collect.select_blocks(
            collect.domain_codes(train.domains, domains, str(train_path)),
            ap.train_blocks,
            ap.seed,
            per_domain=True,
        )
        train_tab = collect.token_table(train, picked, domains, str(train_path))

    knock_tables: dict[str, pd.DataFrame] = {}
    for name in moe_names:
        v = variants[name]
        n_exp = _n_experts(v.model)
        results["n_experts"] = n_exp
        routed = collect.route(v.model, tab.ids, ap.batch_size)
        layers = _layer_results(routed, tab, n_exp, params)
        results["variants"][name]["layers"] = layers
        clock(f"{name}: routed and measured {len(layers)} MoE layers")
        add_saturation(layers, v, routed, n_exp, ctx)
        if train_tab is not None:
            add_train_eval(layers, v, routed, train_tab, n_exp, ctx)
        if format_docs:
            eos = int(evals.meta.get("eos_id", 50256))
            add_format_test(layers, v, encoder, format_docs, eos, n_exp, ctx)
        if name == main and encoder is not None and "code" in domains:
            notes.append(
                add_token_types(layers, v, routed, encoder, texts.get("code", {}), n_exp, ctx)
            )
        if name == main and ap.knockout_blocks > 0:
            knock_tables[name], note = add_knockout(layers, v, ctx)
            notes.append(note)

    results["setup"] = _setup(params, variants, tab, evals, block_size, moe_names)
    if moe_names:
        notes.append(
            "Consecutive-token pairs are pairs of adjacent tokens of one document within one packed "
            "block (a pair across a block boundary is left out: its second token was routed without "
            "the first in its context)."
        )
    curves = _training_curves(variants, domains, results["n_experts"])
    publish(results, curves, knock_tables, params, paths, clock)
    return results


def _format_documents(
    texts: Mapping[str, Mapping[str, str]], domains: list[str], per_domain: int, seed: int
) -> list[tuple[int, str]]:
    """`per_domain` seeded eval documents of each domain, as (domain code, text)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, str]] = []
    if per_domain <= 0:
        return out
    for i, d in enumerate(domains):
        docs = texts.get(d) or {}
        keys = sorted(docs)
        for j in (
            sorted(rng.choice(len(keys), size=min(per_domain, len(keys)), replace=False))
            if keys
            else []
        ):
            out.append((i, docs[keys[j]]))
    return out


def _setup(
    params: Params,
    variants: Mapping[str, Variant],
    tab: collect.TokenTable,
    evals: Any,
    block_size: int,
    moe_names: list[str],
) -> dict[str, Any]:
    m = params.model
    arch = next(iter(variants.values())).model.config
    per_dom = np.bincount(tab.block_domain, minlength=len(tab.domain_names))
    out: dict[str, Any] = {
        "model": f"GPT-2, {arch.n_layer} blocks, width {arch.n_embd}, {arch.n_head} heads"
        + (
            f"; MoE in blocks {', '.join(map(str, m.moe_layers))}: {m.n_experts} experts, top-{m.top_k}"
            if moe_names
            else ""
        ),
        "eval set": f"{len(tab.rows)} of {len(evals)} blocks x {block_size} tokens = {tab.n_tokens:,} tokens "
        f"from {len(tab.doc_ids)} documents ("
        + ", ".join(f"{d} {n}" for d, n in zip(tab.domain_names, per_dom, strict=True))
        + " blocks)",
    }
    for name, v in variants.items():
        mp, tp = params.variant(name)
        c = v.summary.get("collapse") or {}
        stop = (
            f", stopped by collapse at step {c.get('step')}"
            if c.get("detected") and v.summary.get("steps", 0) < tp.max_steps
            else ""
        )
        lb = f", lb_coef {mp.lb_coef:g}, z_coef {mp.z_coef:g}" if v.moe else ""
        out[f"variant {name}"] = f"{v.summary.get('steps')} of {tp.max_steps} steps{lb}{stop}"
    a = params.analyze
    out["baselines"] = (
        f"{a.n_permutations} label shuffles, {a.n_bootstrap} bootstrap draws, {a.n_shuffles} "
        f"information shuffles, seed {a.seed}"
    )
    return out


def _training_curves(
    variants: Mapping[str, Variant], domains: list[str], n_experts: int
) -> dict[str, Any]:
    loss_rows, router_rows = [], []
    for name, v in variants.items():
        for split in ("train", "eval"):
            c = read_curve(v.report_dir, f"{split}/lm_loss")
            if c is not None:
                loss_rows.append(
                    c.assign(variant=name, split=split).rename(columns={"value": "loss"})
                )
        if not v.moe:
            continue
        for block in sorted(i for i, _ in moe_layers(v.model)):
            parts = {}
            for key in ("top_share", "token_entropy", "dead_experts"):
                c = read_curve(v.report_dir, f"router/layer{block}/{key}")
                if c is not None:
                    parts[key] = c.set_index("step")["value"]
            if parts:
                df = pd.DataFrame(parts).reset_index()
                df["variant"], df["layer"] = name, block
                router_rows.append(df)
    router = pd.concat(router_rows, ignore_index=True) if router_rows else pd.DataFrame()
    if len(router):
        if "token_entropy" in router:
            router["entropy"] = router["token_entropy"] / math.log(n_experts)
        if "dead_experts" in router:
            router["live_experts"] = n_experts - router["dead_experts"]
    return {
        "loss": pd.concat(loss_rows, ignore_index=True) if loss_rows else pd.DataFrame(),
        "router": router,
        "final": {
            name: _eval_block(v.summary, domains)["per_domain"] for name, v in variants.items()
        },
    }


# --------------------------------------------------------------------------- outputs


def _metrics_summary(results: Mapping[str, Any]) -> dict[str, Any]:
    """The compact numbers `dvc metrics show` lists: per variant eval losses, per layer specialization."""
    out: dict[str, Any] = {}
    for name, r in results["variants"].items():
        ev = r.get("eval") or {}
        m: dict[str, Any] = {"eval_loss": ev.get("loss"), "eval_loss_macro": ev.get("loss_macro")}
        m.update({f"eval_loss_{d}": x for d, x in (ev.get("per_domain") or {}).items()})
        if r.get("collapse") is not None:
            m["collapse_detected"] = int(bool(r["collapse"].get("detected")))
            if r["collapse"].get("detected"):
                m["collapse_step"] = r["collapse"].get("step")
        for layer, lr in (r.get("layers") or {}).items():
            d, h, c, load = lr["domain"], lr["heldout"], lr["consecutive"], lr["load"]
            lm = {
                "mi_ratio": d["mi_ratio"]["value"],
                "mi_ratio_shuffled": d["mi_ratio"]["null_mean"],
                "mi_ratio_shuffled_p95": d["mi_ratio"]["null_p95"],
                "max_share": d["max_share"]["value"],
                "max_share_shuffled": d["max_share"]["null_mean"],
                "top_share": load["top_share"],
                "load_entropy": load["entropy"],
                "dead_experts": load["dead"],
                "token_id_accuracy": h["accuracy"]["token"],
                "majority_accuracy": h["accuracy"]["majority"],
                "consecutive_rate": c["rate"],
                "consecutive_chance": c["chance_load"],
            }
            if lr.get("format"):
                lm["format_agreement_min"] = min(f["agreement"] for f in lr["format"].values())
            if lr.get("knockout"):
                lm["knockout_max_delta"] = lr["knockout"]["max_delta"]
            m[f"layer{layer}"] = lm
        out[name] = m
    return out


def _tsv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, sep="\t", index=False, float_format="%.6g")


def _write_curves(
    results: Mapping[str, Any], knock: Mapping[str, pd.DataFrame], directory: Path
) -> None:
    domains = results["domains"]
    for name, r in results["variants"].items():
        sat = {}
        for layer, lr in (r.get("layers") or {}).items():
            p = np.asarray(lr["domain"]["p_expert_given_domain"])
            _tsv(
                pd.DataFrame(
                    {"expert": np.arange(p.shape[1]), **{d: p[i] for i, d in enumerate(domains)}}
                ),
                directory / f"routing_{name}_layer{layer}.tsv",
            )
            if lr.get("saturation"):
                sat[f"layer{layer}"] = pd.Series(
                    {s["step"]: s["agreement"] for s in lr["saturation"]}
                )
        if sat:
            _tsv(
                pd.DataFrame(sat).rename_axis("step").reset_index(),
                directory / f"saturation_{name}.tsv",
            )
    for name, table in knock.items():
        for layer, g in table.groupby("layer"):
            wide = g.pivot(index="expert", columns="domain", values="delta").reset_index()
            _tsv(wide, directory / f"knockout_{name}_layer{layer}.tsv")


def _figures(
    results: dict[str, Any],
    curves: Mapping[str, Any],
    knock: Mapping[str, pd.DataFrame],
    params: Params,
    directory: Path,
) -> list[dict[str, str]]:
    figs: list[dict[str, str]] = []
    domains = results["domains"]
    n_exp = results["n_experts"]
    thr = results["collapse_threshold"]
    main = results.get("main_variant")
    moe = [v for v, r in results["variants"].items() if r.get("layers")]

    def add(name: str, caption: str) -> None:
        figs.append({"path": f"{FIGURES}/{name}", "caption": caption})

    if len(curves["loss"]):
        figures.plot_training_curves(
            curves["loss"], curves["final"], directory / "training_curves.png"
        )
        add(
            "training_curves.png",
            "Train and eval LM loss of every variant; final eval loss per domain",
        )
    if moe:
        tables, subs = {}, {}
        for v in moe:
            for layer, lr in results["variants"][v]["layers"].items():
                label = f"{v}, layer {layer}"
                tables[label] = lr["domain"]["p_expert_given_domain"]
                mi = lr["domain"]["mi_ratio"]
                subs[label] = (
                    f"I(E;D)/H(D) = {mi['value']:.3f} (shuffled labels {mi['null_mean']:.3f})"
                )
        figures.plot_domain_heatmaps(
            tables, domains, directory / "domain_heatmaps.png", subtitles=subs
        )
        add(
            "domain_heatmaps.png",
            "P(expert | domain) on the eval set, every MoE layer of every MoE variant",
        )
        figures.plot_specialization_baselines(
            figures.specialization_rows(results), directory / "specialization_baselines.png"
        )
        add(
            "specialization_baselines.png",
            "Specialization numbers with bootstrap CIs against their shuffled baselines",
        )
        loads = {
            v: {
                f"layer {layer}": lr["load"]["fractions"]
                for layer, lr in results["variants"][v]["layers"].items()
            }
            for v in moe
        }
        labels = {v: f"{v} (lb_coef {params.variant(v)[0].lb_coef:g})" for v in moe}
        figures.plot_lb_comparison(loads, directory / "lb_comparison.png", labels=labels)
        add("lb_comparison.png", "Expert load on the eval set with and without load balancing")
        router = curves["router"]
        if len(router) and {"top_share", "live_experts"} <= set(router):
            target = _collapse_variant(results, params, moe)
            if target is not None:
                c = results["variants"][target].get("collapse") or {}
                steps = results["variants"][target]["eval"].get("step")
                label = (
                    f"{target}, collapse detected at step {c.get('step')}"
                    if c.get("detected")
                    else f"{target}, no collapse detected in {steps} steps"
                )
                figures.plot_collapse_trajectory(
                    router[router["variant"] == target],
                    directory / "collapse_trajectory.png",
                    n_experts=n_exp,
                    threshold=thr,
                    collapse_step=c.get("step") if c.get("detected") else None,
                    variant=label,
                )
                add(
                    "collapse_trajectory.png",
                    f"Collapse trajectory of {target}: top-expert share and live experts "
                    "per training log window",
                )
        if len(router) and {"top_share", "entropy"} <= set(router):
            figures.plot_router_over_training(
                router, directory / "router_over_training.png", threshold=thr, n_experts=n_exp
            )
            add(
                "router_over_training.png",
                "Router entropy (per token, / log E) and top-expert share over training",
            )
        figures.plot_token_identity(
            figures.token_identity_rows(results), directory / "token_identity.png"
        )
        add(
            "token_identity.png",
            "Held-out accuracy of predicting a token's expert from the majority expert, the "
            "domain, the token id, and both",
        )
        sat = [
            {"variant": v, "layer": int(layer), **s}
            for v in moe
            for layer, lr in results["variants"][v]["layers"].items()
            for s in lr.get("saturation") or []
        ]
        if sat:
            figures.plot_saturation(pd.DataFrame(sat), directory / "saturation.png")
            add(
                "saturation.png",
                "Router saturation: agreement of each training snapshot's routing with the final "
                "model's",
            )
        fmt = figures.format_rows(results, main) if main else pd.DataFrame()
        if len(fmt):
            figures.plot_format_agreement(fmt, directory / "format_agreement.png")
            add(
                "format_agreement.png",
                f"Format-artifact test ({main}): same expert for unchanged content tokens",
            )
        tt = (
            {
                f"layer {layer}": lr["token_types"]
                for layer, lr in results["variants"][main]["layers"].items()
                if lr.get("token_types")
            }
            if main
            else {}
        )
        if tt:
            first = next(iter(tt.values()))
            figures.plot_token_type_routing(
                {k: t["fractions"] for k, t in tt.items()},
                TOKEN_TYPES,
                directory / "token_types.png",
                n_tokens=first["n_tokens"],
                title=f"Python token types: routing of code eval tokens ({main})",
            )
            add(
                "token_types.png",
                f"Python token types of code eval tokens and their experts ({main})",
            )
        for v, table in knock.items():
            figures.plot_knockout(table, domains, directory / "knockout.png", variant=v)
            add(
                "knockout.png",
                f"Expert knockout ({v}): change of eval loss per domain with one expert disabled",
            )
    return figs


def _collapse_variant(results: Mapping[str, Any], params: Params, moe: list[str]) -> str | None:
    """The variant whose collapse trajectory is drawn: a detected collapse first, else one without LB."""
    for v in moe:
        if (results["variants"][v].get("collapse") or {}).get("detected"):
            return v
    for v in moe:
        if params.variant(v)[0].lb_coef == 0:
            return v
    return None


def publish(
    results: dict[str, Any],
    curves: Mapping[str, Any],
    knock: Mapping[str, pd.DataFrame],
    params: Params,
    paths: Paths,
    clock: Callable[[str], None],
) -> None:
    """Write figures, curve tables, results, metrics and the report, each whole or not at all."""
    out = paths.out
    with atomic_dir(out / FIGURES) as tmp:
        results["figures"] = _figures(results, curves, knock, params, tmp)
    clock(f"{len(results['figures'])} figures in {out / FIGURES}")
    with atomic_dir(out / CURVES) as tmp:
        _write_curves(results, knock, tmp)
    write_json(out / RESULTS, results)
    write_json(out / METRICS, _metrics_summary(results))
    write_text(out / REPORT, build_report(results))
    clock(f"wrote {out / REPORT}, {out / METRICS}, {out / CURVES}")


def one_line_summary(
    results: Mapping[str, Any], seconds: float, out: Path = Path("reports")
) -> str:
    """`analyze: ...` line: the main variant's specialization per layer next to its baseline."""
    parts = []
    main = results.get("main_variant")
    for name, r in results["variants"].items():
        ev = r.get("eval") or {}
        if ev.get("loss_macro") is not None:
            parts.append(f"{name} eval {ev['loss_macro']:.3f}")
    if main:
        for layer, lr in results["variants"][main]["layers"].items():
            mi = lr["domain"]["mi_ratio"]
            parts.append(
                f"{main} L{layer} I(E;D)/H(D) {mi['value']:.3f} (shuffled {mi['null_mean']:.3f})"
            )
    return f"analyze: {'; '.join(parts)}; {out / REPORT} in {seconds:.0f} s"
