"""The analyze stage's work: trained runs in, `reports/` out.

`run_analysis` loads the base, every run (dense and `run_variants`, once per
seed) and the eval set; measures quality against the count baselines, routing
against the untrained router, collapse against step 0; fills a `Results`
(results.py) and hands it to `publish`. Nothing is written until every number
is computed, and each output is written whole or not at all.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from moe_emergence.analysis import collect, measure
from moe_emergence.analysis.agreement import distribution_agreement, router_saturation
from moe_emergence.analysis.knockout import knockout_table
from moe_emergence.analysis.ngram import Bigram, Unigram
from moe_emergence.analysis.results import Results, Table
from moe_emergence.analysis.specialization import expert_domain_counts
from moe_emergence.analysis.token_types import TOKEN_TYPES, token_type_routing
from moe_emergence.core.config import ModelParams, Params, ParamsError
from moe_emergence.data.packed import load_packed, spread_rows
from moe_emergence.data.vocab import VOCAB_FILE, Vocab
from moe_emergence.model.checkpoint import CheckpointError, check_sidecar, load_model
from moe_emergence.model.gpt2 import moe_layers, to_moe
from moe_emergence.model.spec import ArchSpec, MoESpec


@dataclass
class Paths:
    packed: Path = Path("data/packed")
    sampled: Path = Path("data/sampled")
    models: Path = Path("models")
    train_reports: Path = Path("reports/train")
    out: Path = Path("reports")


def _log(msg: str) -> None:
    print(f"analyze: {msg}", file=sys.stderr, flush=True)


class Clock:
    """Progress lines with the seconds each step took."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.last = log, time.perf_counter()

    def __call__(self, msg: str) -> None:
        now = time.perf_counter()
        self.log(f"{msg} ({now - self.last:.1f} s)")
        self.last = now


def train_stage(variant: str, seed: int) -> str:
    """The `dvc repro` target that makes a run's model and metrics."""
    return f"train_dense@{seed}" if variant == "dense" else f"train@{variant}-{seed}"


@dataclass
class Run:
    variant: str
    seed: int
    moe: bool
    mp: ModelParams
    model: Any
    summary: dict[str, Any]  # reports/train/<run>/metrics.json
    events: dict[str, Any]  # models/<run>/events.json
    model_dir: Path
    report_dir: Path

    @property
    def name(self) -> str:
        return f"{self.variant}/seed{self.seed}"


def load_run(params: Params, variant: str, seed: int, paths: Paths) -> Run:
    """A trained run's final model and training summary; errors name the stage that makes them."""
    stage = train_stage(variant, seed)
    name = f"{variant}/seed{seed}"
    model_dir, report_dir = paths.models / name, paths.train_reports / name
    for path, what in ((model_dir / "model.safetensors", "checkpoint"), (report_dir / "metrics.json", "training summary")):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the {what} of run {name!r} is missing; run `dvc repro {stage}`")
    mp, _ = params.variant(variant)
    moe = params.is_moe(variant)
    model, side = load_model(model_dir)
    check_sidecar(side, model_dir, name, stage, ArchSpec.from_params(mp.arch) if mp.init == "scratch" else None,
                  MoESpec.from_params(mp) if moe else None)
    events_path = model_dir / "events.json"
    events = json.loads(events_path.read_text()) if events_path.is_file() else {}
    return Run(variant, seed, moe, mp, model, json.loads((report_dir / "metrics.json").read_text()), events,
               model_dir, report_dir)


def snapshot_dirs(model_dir: Path) -> dict[int, Path]:
    """Model snapshots saved during training, by step."""
    out = {}
    for d in sorted((model_dir / "snapshots").glob("step_*")):
        m = re.fullmatch(r"step_(\d+)", d.name)
        if m and (d / "model.safetensors").is_file():
            out[int(m.group(1))] = d
    return out


def read_sampled(sampled: Path, split: str = "eval") -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """({domain: {doc_id: text}}, {doc_id: group_id}) of one split of the sampled documents."""
    from moe_emergence.data.documents import domain_files, read_docs

    texts: dict[str, dict[str, str]] = {}
    groups: dict[str, str] = {}
    for domain, path in domain_files(sampled, "sample").items():
        t = read_docs(path, "sample", columns=["doc_id", "group_id", "text", "split"])
        keep = np.asarray(t.column("split").to_pylist()) == split
        ids = np.asarray(t.column("doc_id").to_pylist(), dtype=object)[keep].tolist()
        texts[domain] = dict(zip(ids, np.asarray(t.column("text").to_pylist(), dtype=object)[keep].tolist(), strict=True))
        groups.update(zip(ids, np.asarray(t.column("group_id").to_pylist(), dtype=object)[keep].tolist(), strict=True))
    return texts, groups


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


def format_documents(texts: Mapping[str, Mapping[str, str]], domains: list[str], per_domain: int,
                     seed: int) -> list[tuple[int, str]]:
    """`per_domain` seeded eval documents of each domain, as (domain code, text)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, str]] = []
    for i, d in enumerate(domains):
        keys = sorted(texts.get(d) or {})
        if per_domain > 0 and keys:
            for j in sorted(rng.choice(len(keys), size=min(per_domain, len(keys)), replace=False)):
                out.append((i, texts[d][keys[j]]))
    return out


# --------------------------------------------------------------------------- the analysis


@dataclass
class Inputs:
    """What every measurement reads."""

    params: Params
    tab: collect.TokenTable
    vocab: Vocab
    train_ids: np.ndarray  # [n, T] the whole train split in model ids (baselines, calibration)
    train_tab: collect.TokenTable | None  # a per-domain sample of train blocks (eval-vs-train)
    encoder: Any
    texts: dict[str, dict[str, str]]
    fplan: collect.FormatPlan | None  # the format test's documents and their perturbed copies
    device: torch.device
    clock: Clock

    @property
    def domains(self) -> list[str]:
        return self.tab.domain_names


def load_inputs(params: Params, paths: Paths, base: Any, clock: Clock) -> Inputs:
    from moe_emergence.data.tokenizer import load_tokenizer

    ap = params.analyze
    vocab = Vocab.of_model(base)
    if Vocab.read(paths.packed / VOCAB_FILE) != vocab:
        raise CheckpointError(f"{paths.models / 'base'} embeds other ids than {paths.packed / VOCAB_FILE} lists: "
                              "the model and the packed data come from different runs; run `dvc repro`")
    evals = load_packed(paths.packed / "eval.arrow")
    train = load_packed(paths.packed / "train.arrow")
    domains = list(evals.meta.get("domains") or sorted(set(evals.domains)))
    if evals.block_size > base.config.n_positions:
        raise CheckpointError(f"{paths.models / 'base'}: the model's context ({base.config.n_positions}) is shorter "
                              f"than the packed blocks ({evals.block_size}); run `dvc repro`")
    texts, doc_groups = read_sampled(paths.sampled, "eval")
    _, train_groups = read_sampled(paths.sampled, "train")
    codes = collect.domain_codes(evals.domains, domains, "data/packed/eval.arrow")
    rows = collect.select_blocks(codes, ap.max_eval_blocks, ap.seed)
    tab = collect.token_table(evals, rows, domains, doc_groups, vocab.encode, "data/packed/eval.arrow")
    train_tab = None
    if ap.train_blocks > 0:
        picked = collect.select_blocks(collect.domain_codes(train.domains, domains, "data/packed/train.arrow"),
                                       ap.train_blocks, ap.seed, per_domain=True)
        train_tab = collect.token_table(train, picked, domains, train_groups, vocab.encode, "data/packed/train.arrow")
    encoder = collect.Encoder(load_tokenizer(evals.meta.get("tokenizer", "embedded")))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    groups = {d: int(len(np.unique(tab.group[tab.domain == i]))) for i, d in enumerate(domains)}
    clock(f"eval set: {len(rows)} blocks x {evals.block_size} tokens = {tab.n_tokens:,} tokens from "
          f"{len(tab.doc_ids)} documents in {sum(groups.values())} groups")
    docs = format_documents(texts, domains, ap.format_docs, ap.seed)
    fplan = collect.format_plan(encoder, docs, ap.format_perturbations, ap.format_prefix, evals.block_size,
                                int(evals.meta.get("eos_id", 50256)), vocab.encode) if docs else None
    return Inputs(params, tab, vocab, vocab.encode(train.ids).astype(np.int64), train_tab, encoder, texts, fplan,
                  device, clock)


def token_losses(model: Any, inp: Inputs) -> np.ndarray:
    """Per next-token target of the eval set, the model's loss [B * (T-1)] in nats."""
    model.to(inp.device)
    b, t = inp.tab.model_ids.shape
    out = []
    bs = inp.params.analyze.batch_size
    for s in range(0, b, bs):
        ids = inp.tab.model_ids[s : s + bs]
        h = collect.final_hidden(model, ids, bs)
        x = torch.from_numpy(ids).to(h.device)
        out.append(collect.next_token_loss(model, h, x, torch.ones(len(ids), t - 1, dtype=torch.bool)).double().cpu().numpy())
    return np.concatenate(out)


def untrained_null(base: Any, mp: ModelParams, inp: Inputs, n_seeds: int) -> list[dict[int, dict[str, float]]]:
    """The specialization numbers of an untrained router, one draw per router seed (0..n-1: a run
    trained with seed s started from draw s): the router weights `to_moe` gives at initialization,
    applied to the base's own MLP inputs on the eval set and the format test's documents. The
    base's hidden states are what the untrained router would see but for the upcycling noise of
    earlier MoE layers (1% of a parameter's spread), and computing them once makes a null of many
    draws cost one forward."""
    ap, tab = inp.params.analyze, inp.tab
    layers = sorted(mp.moe_layers)
    h_eval = collect.mlp_inputs(base, tab.model_ids, layers, ap.batch_size)
    h_fmt = collect.mlp_inputs(base, inp.fplan.ids, layers, ap.batch_size) if inp.fplan is not None else None
    calib = torch.from_numpy(spread_rows(inp.train_ids, mp.calibration_blocks))
    draws = []
    for seed in range(n_seeds):
        moe = to_moe(copy.deepcopy(base), MoESpec.from_params(mp), seed=seed, calibration=calib)
        per_layer = {}
        for i, layer in moe_layers(moe):
            w = layer.router.weight.detach().float().cpu()[: layer.n_primary]  # dormant ghosts take nothing
            fmt = {}
            if h_fmt is not None:
                top_f = (h_fmt[i] @ w.t()).argmax(-1).numpy()
                fmt = {k: a["agreement"] for k, a in inp.fplan.agreements(top_f, layer.n_experts, inp.domains).items()}
            top1 = (h_eval[i] @ w.t()).argmax(-1).numpy()
            nums = measure.layer_numbers(top1, tab, layer.n_experts, ap.min_token_count, fmt)
            if fmt:
                nums["format_min"] = min(fmt.values())
            per_layer[i] = nums
        draws.append(per_layer)
    return draws


def model_experts(model: Any) -> int:
    return max(layer.n_experts for _, layer in moe_layers(model))


def init_signature(mp: ModelParams) -> tuple:
    """What decides the router at initialization (runs that share it share the untrained null)."""
    return (tuple(mp.moe_layers), mp.n_experts, mp.ghost_experts, mp.moe_init, mp.upcycle_noise, mp.router_init,
            mp.calibration_blocks)


def _step0(run: Run, layer: int, where: str = "eval") -> dict[str, float]:
    rec = (run.events.get("step0") or {}).get(where, {}).get(f"layer{layer}")
    return {"top_share": rec["top_share"], "live_experts": rec["live_experts"]} if rec else {}


def measure_run(run: Run, inp: Inputs, table: Table, untrained: list[dict[int, dict[str, float]]],
                frames: dict[str, list[pd.DataFrame]]) -> None:
    """Every routing number of one MoE run, its format test, saturation and eval-vs-train routing."""
    ap, tab = inp.params.analyze, inp.tab
    model = run.model.to(inp.device)
    n_exp = model_experts(model)
    routed = collect.route(model, tab.model_ids, ap.batch_size)
    fr = collect.route(model, inp.fplan.ids, ap.batch_size) if inp.fplan is not None else None
    train_routed = collect.route(model, inp.train_tab.model_ids, ap.batch_size) if inp.train_tab is not None else None
    snaps = {s: d for s, d in snapshot_dirs(run.model_dir).items()
             if s < int(run.summary.get("steps", 0)) and ap.saturation_blocks > 0}
    # saturation on a per-domain sample of eval blocks: one forward per snapshot
    sat_rows = collect.select_blocks(tab.block_domain, ap.saturation_blocks, ap.seed, per_domain=True)
    t = tab.model_ids.shape[1]
    sat_tokens = (sat_rows[:, None] * t + np.arange(t)).reshape(-1)
    snap_routes = {s: collect.route(load_model(d)[0].to(inp.device), tab.model_ids[sat_rows], ap.batch_size).experts
                   for s, d in snaps.items()}
    for layer in sorted(routed.experts):
        top1 = routed.top1(layer)
        fmt = inp.fplan.agreements(fr.top1(layer), n_exp, inp.domains) if fr is not None else {}
        measure.add_routing(table, run.variant, run.seed, layer, top1, tab, n_exp, [u[layer] for u in untrained],
                            ap, fmt, step0=_step0(run, layer), lb=routed.lb.get(layer), z=routed.z.get(layer))
        p = measure.routing_matrix(top1, tab, n_exp)
        frames["routing"].append(_matrix_frame(p, inp.domains, run, layer))
        for kind, agr in fmt.items():
            for dom, g in {"all": agr, **agr["per_group"]}.items():
                frames["format"].append(pd.DataFrame([{"variant": run.variant, "seed": run.seed, "layer": layer,
                                                       "perturbation": kind, "domain": dom, "agreement": g["agreement"],
                                                       "chance": g["chance"], "n_tokens": g["n_tokens"],
                                                       "coverage": inp.fplan.coverage[kind]}]))
        if snap_routes:
            sat = router_saturation({s: e[layer][:, :1] for s, e in snap_routes.items()}, top1[sat_tokens], n_exp)
            frames["saturation"].append(pd.DataFrame(sat).assign(variant=run.variant, seed=run.seed, layer=layer))
        if train_routed is not None:
            n_dom = len(inp.domains)
            overlap = distribution_agreement(
                expert_domain_counts(train_routed.top1(layer), inp.train_tab.domain, n_exp, n_dom),
                expert_domain_counts(top1, tab.domain, n_exp, n_dom), inp.domains)
            frames["train_eval"].append(pd.DataFrame([{"variant": run.variant, "seed": run.seed, "layer": layer,
                                                       "domain": d, **v} for d, v in overlap.items()]))
        for where in ("eval", "train_window"):
            rec = (run.events.get("step0") or {}).get(where, {}).get(f"layer{layer}")
            if rec:
                frames["loads"].append(pd.DataFrame({"variant": run.variant, "seed": run.seed, "layer": layer,
                                                     "where": where, "when": "step0", "expert": range(len(rec["fractions"])),
                                                     "share": rec["fractions"]}))
        frames["loads"].append(pd.DataFrame({"variant": run.variant, "seed": run.seed, "layer": layer, "where": "eval",
                                             "when": "final", "expert": range(n_exp),
                                             "share": np.bincount(top1, minlength=n_exp) / max(len(top1), 1)}))
    collapse = run.events.get("collapse") or {}
    table.add(run.variant, "collapse_detected", float(bool(collapse.get("detected"))), seed=run.seed)
    if collapse.get("detected"):
        table.add(run.variant, "collapse_step", float(collapse["step"]), seed=run.seed)
        frames["collapses"].append(pd.DataFrame([{"variant": run.variant, "seed": run.seed, **collapse}]))
    table.add(run.variant, "steps", float(run.summary.get("steps", 0)), seed=run.seed)
    for layer in sorted(routed.experts):
        w = _step0(run, layer, "train_window")
        if w:
            table.add(run.variant, "top_share_window0", w["top_share"], seed=run.seed, layer=layer)
            table.add(run.variant, "live_experts_window0", w["live_experts"], seed=run.seed, layer=layer)
    inp.clock(f"{run.name}: routing of {len(routed.experts)} MoE layers, {len(snaps)} snapshots, format test")


def _matrix_frame(p: np.ndarray, domains: list[str], run: Run, layer: int) -> pd.DataFrame:
    d, e = np.meshgrid(np.arange(p.shape[0]), np.arange(p.shape[1]), indexing="ij")
    return pd.DataFrame({"variant": run.variant, "seed": run.seed, "layer": layer,
                         "domain": [domains[i] for i in d.ravel()], "expert": e.ravel(), "share": p.ravel()})


def knockout(run: Run, inp: Inputs) -> tuple[pd.DataFrame, str]:
    """Per (layer, expert, domain): the eval loss change with the expert disabled."""
    ap, tab = inp.params.analyze, inp.tab
    sel = collect.select_blocks(tab.block_domain, ap.knockout_blocks, ap.seed, per_domain=True)
    present = [d for i, d in enumerate(inp.domains) if (tab.block_domain[sel] == i).any()]
    base, knocked = collect.knockout_losses(run.model, tab.model_ids[sel], tab.block_domain[sel], inp.domains,
                                            ap.batch_size)
    routed = collect.route(run.model, tab.model_ids, ap.batch_size)
    rows = [inp.domains.index(d) for d in present]
    shares = {b: measure.routing_matrix(routed.top1(b), tab, model_experts(run.model))[rows] for b in routed.experts}
    out = knockout_table(base, knocked, shares, present)
    inp.clock(f"{run.name}: knockout of {len(knocked)} experts on {len(sel)} blocks")
    return out.assign(variant=run.variant, seed=run.seed), (
        f"Expert knockout ({run.name}) on {len(sel)} eval blocks ({', '.join(present)}; equal numbers per domain "
        "where the eval set has them), against the intact model's losses on the same blocks.")


def token_types(run: Run, inp: Inputs) -> tuple[pd.DataFrame, str]:
    """Routing of code eval tokens by Python token type (main run)."""
    tab = inp.tab
    types, stats = collect.code_token_types(inp.encoder, inp.texts.get("code", {}), tab, inp.domains.index("code"))
    typed = types >= 0
    routed = collect.route(run.model, tab.model_ids, inp.params.analyze.batch_size)
    n_exp = model_experts(run.model)
    rows = []
    for layer in sorted(routed.experts):
        if not typed.any():
            break
        r = token_type_routing(types[typed], routed.top1(layer)[typed], n_exp)
        for t, name in enumerate(TOKEN_TYPES):
            frac = np.asarray(r["fractions"][t])
            if r["n_tokens"][name]:
                e = int(frac.argmax())
                rows.append({"layer": layer, "type": name, "n_tokens": r["n_tokens"][name], "expert": e,
                             "share": float(frac[e]), "share_all": float(r["load"][e])})
    inp.clock(f"{run.name}: Python token types")
    return pd.DataFrame(rows), (
        f"Python token types ({run.name}): {int(typed.sum()):,} code eval tokens typed from {stats['docs']} "
        f"documents ({stats['partial']} that `tokenize` could not finish keep the types found before the error; "
        f"{stats['unmatched']} left out because their text was missing or re-tokenized differently).")


def training_curves(runs: list[Run], n_experts: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(loss curves, router curves) of every run from its DVCLive tables."""
    loss, router = [], []
    for r in runs:
        for split in ("train", "eval"):
            c = read_curve(r.report_dir, f"{split}/lm_loss")
            if c is not None:
                loss.append(c.rename(columns={"value": "loss"}).assign(variant=r.variant, seed=r.seed, split=split))
        for layer in (i for i, _ in moe_layers(r.model)):
            parts = {k: c.set_index("step")["value"] for k in ("top_share", "token_entropy", "dead_experts")
                     if (c := read_curve(r.report_dir, f"router/layer{layer}/{k}")) is not None}
            if parts:
                df = pd.DataFrame(parts).reset_index().assign(variant=r.variant, seed=r.seed, layer=layer)
                router.append(df)
    rc = pd.concat(router, ignore_index=True) if router else pd.DataFrame()
    if len(rc):
        rc["entropy"] = rc.get("token_entropy", np.nan) / np.log(n_experts)
        rc["live_experts"] = n_experts - rc.get("dead_experts", np.nan)
    return (pd.concat(loss, ignore_index=True) if loss else pd.DataFrame()), rc


def setup_lines(params: Params, base: Any, inp: Inputs, runs: list[Run], boot: measure.GroupBootstrap) -> dict[str, str]:
    cfg, m = base.config, params.model
    per_dom = np.bincount(inp.tab.block_domain, minlength=len(inp.domains))
    out = {
        "model": f"GPT-2, {cfg.n_layer} layers, width {cfg.n_embd}, {cfg.n_head} heads, {inp.vocab.size:,} token ids "
                 f"({'the tokenizer vocabulary' if inp.vocab.full else f'train ids seen >= {params.pack.vocab_min_count} times + UNK'})"
                 f"; MoE in layers {', '.join(map(str, m.moe_layers))}: {m.n_experts} experts, top-{m.top_k}, "
                 f"router init {m.router_init}",
        "eval set": f"{len(inp.tab.rows)} blocks x {inp.tab.ids.shape[1]} tokens = {inp.tab.n_tokens:,} tokens, "
                    + ", ".join(f"{d} {n} blocks / {boot.n_groups()[d]} groups" for d, n in zip(inp.domains, per_dom, strict=True)),
        "seeds": ", ".join(map(str, params.seeds)) + " (router and expert init, batch order; the base is shared)",
    }
    for variant in dict.fromkeys(r.variant for r in runs):
        mp, tp = params.variant(variant)
        steps = sorted({int(r.summary.get("steps", 0)) for r in runs if r.variant == variant})
        lb = f", lb_coef {mp.lb_coef:g} (mean over {len(mp.moe_layers)} MoE layers: {mp.lb_coef / len(mp.moe_layers):g} per layer), z_coef {mp.z_coef:g}" if params.is_moe(variant) else ""
        out[f"variant {variant}"] = f"{'/'.join(map(str, steps))} of {tp.max_steps} steps, lr {tp.optim.lr:g}{lb}"
    a = params.analyze
    out["nulls"] = (f"untrained router: {a.untrained_seeds} router seeds; {a.n_permutations} group-label shuffles, "
                    f"{a.n_bootstrap} group bootstrap draws, {a.n_shuffles} information shuffles, seed {a.seed}")
    return out


def check_perturbations(kinds: list[str]) -> None:
    """The format test's perturbations must be ones `analysis/perturb.py` knows (checked before any work)."""
    from moe_emergence.analysis.perturb import PERTURBATIONS

    for i, kind in enumerate(kinds):
        if kind not in PERTURBATIONS:
            raise ParamsError(f"params.yaml: `analyze.format_perturbations[{i}]` is {kind!r}; "
                              f"known: {', '.join(PERTURBATIONS)}")


def run_analysis(params: Params, paths: Paths | None = None, log: Callable[[str], None] = _log) -> Results:
    """Analyze the base, dense and `run_variants` for every seed, and publish the reports."""
    from moe_emergence.analysis.publish import publish

    paths = paths or Paths()
    ap = params.analyze
    check_perturbations(ap.format_perturbations)
    clock = Clock(log)
    base, _ = load_model(paths.models / "base")
    runs = [load_run(params, v, s, paths) for v in ["dense", *params.run_variants] for s in params.seeds]
    clock(f"loaded the base and {len(runs)} runs")
    inp = load_inputs(params, paths, base, clock)
    table = Table()
    boot = measure.GroupBootstrap.make(inp.tab, ap.n_bootstrap, ap.seed)
    big = Bigram.fit(inp.train_ids, inp.vocab.size)
    uni = Unigram.fit(inp.train_ids, inp.vocab.size)
    baselines = {"bigram": big.token_losses(inp.tab.model_ids).reshape(-1),
                 "unigram": uni.token_losses(inp.tab.model_ids).reshape(-1)}
    losses = {("base", 0): token_losses(base, inp)}
    for r in runs:
        losses[(r.variant, r.seed)] = token_losses(r.model, inp)
    measure.add_quality(table, losses, baselines, boot)
    clock(f"eval losses of {len(losses)} models and the count baselines, {ap.n_bootstrap} group bootstrap draws")

    frames: dict[str, list[pd.DataFrame]] = {k: [] for k in ("routing", "format", "saturation", "train_eval", "loads",
                                                             "collapses")}
    nulls: dict[tuple, list] = {}
    moe_runs = [r for r in runs if r.moe]
    for r in moe_runs:
        key = init_signature(r.mp)
        if key not in nulls:
            nulls[key] = untrained_null(base, r.mp, inp, ap.untrained_seeds)
            clock(f"untrained router ({r.variant}'s init): {ap.untrained_seeds} router seeds routed and measured")
        measure_run(r, inp, table, nulls[key], frames)
    main_variant = ap.main_variant if ap.main_variant in params.run_variants else (
        params.run_variants[0] if params.run_variants else None)
    main = next((r for r in moe_runs if r.variant == main_variant), None)
    notes: list[str] = []
    knock, types = pd.DataFrame(), pd.DataFrame()
    if main is not None and ap.knockout_blocks > 0:
        knock, note = knockout(main, inp)
        notes.append(note)
    if main is not None and "code" in inp.domains:
        types, note = token_types(main, inp)
        notes.append(note)
    if moe_runs:
        notes.append("Consecutive-token pairs are pairs of adjacent tokens of one document within one packed block "
                     "(a pair across a block boundary is left out: its second token was routed without the first in "
                     "its context).")
    n_exp = params.model.n_experts
    loss_curves, router_curves = training_curves(runs, n_exp)

    def cat(key: str) -> pd.DataFrame:
        return pd.concat(frames[key], ignore_index=True) if frames[key] else pd.DataFrame()

    results = Results(
        table=table.frame(), domains=inp.domains, n_experts=n_exp,
        setup=setup_lines(params, base, inp, runs, boot), main_variant=main_variant,
        collapse_threshold=params.train.collapse_threshold,
        routing=cat("routing"), loads=cat("loads"), loss_curves=loss_curves, router_curves=router_curves,
        saturation=cat("saturation"), format_test=cat("format"), knockout=knock, token_types=types,
        train_eval=cat("train_eval"), collapses=cat("collapses"), notes=notes,
    )
    publish(results, params, paths.out, clock)
    return results
