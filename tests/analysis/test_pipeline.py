"""The analyze stage end to end on a tiny trained run: report, metrics, figures, bad input."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from moe_emergence.analysis import collect
from moe_emergence.analysis.pipeline import Paths, run_analysis
from moe_emergence.core.config import PackParams, parse_params
from moe_emergence.model.checkpoint import CheckpointError, check_sidecar, load_model  # noqa: F811
from moe_emergence.model.gpt2 import moe_layers
from moe_emergence.model.spec import MoESpec

DOMAINS = ["code", "math", "prose"]
WORDS = ["river", "market", "bridge", "castle", "harbour", "forest", "valley", "tower"]


def _doc(domain: str, i: int) -> str:
    if domain == "code":
        return (
            f"def scale_{i}(values, factor={i}):\n"
            f'    """Scale every value by {i}."""\n'
            f"    # keep the order of the input\n"
            f"    out = [v * factor + {i % 7} for v in values]\n"
            f"    if len(out) > {i}:\n"
            f"        return 'long'\n"
            f"    return out\n"
        )
    if domain == "math":
        return (
            f"Tom has {i} apples and buys {i + 3} more. How many apples does he have now?\n"
            f"He has {i} + {i + 3} = {2 * i + 3} apples.\n#### {2 * i + 3}"
        )
    w = WORDS[i % len(WORDS)]
    return (
        f"The {w} of the old town was rebuilt in {1800 + i}. Local builders worked on it for years, "
        f"and the people of the valley came to the {w} to trade wool and grain."
    )


def write_sampled(directory: Path, n_docs: int = 36, n_eval: int = 12, per_group: int = 3) -> None:
    """Documents of three domains; every `per_group` consecutive documents share a group."""
    from moe_emergence.data.documents import content_hash, make_table, write_docs

    for domain in DOMAINS:
        rows = []
        for i in range(n_docs):
            text = _doc(domain, i)
            rows.append(
                {
                    "doc_id": f"{domain}-{i:03d}",
                    "group_id": f"{domain}-g{i // per_group:02d}",
                    "domain": domain,
                    "source": "test",
                    "text": text,
                    "n_chars": len(text),
                    "content_hash": content_hash(text),
                    "origin": "{}",
                    "split": "eval" if i < n_eval else "train",
                }
            )
        write_docs(directory / f"{domain}.parquet", make_table(rows, extra={"split": pa.string()}))


PARAMS = {
    "model": {
        "arch": {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 16},
        "moe_layers": [1],
        "n_experts": 4,
        "upcycle_noise": 0.01,
        "router_init": "centered",
        "calibration_blocks": 8,
    },
    "base": {"max_steps": 4, "batch_size": 4, "optim": {"lr": 0.003, "warmup_frac": 0.25}},
    "train": {
        "max_steps": 4,
        "batch_size": 4,
        "log_every": 1,
        "eval_every": 2,
        "snapshot_every": 2,
        "resume_every": 100,
        "eval_batch_size": 8,
        "collapse_min_live": 2,
        "device": "cpu",
        "optim": {"lr": 0.003, "warmup_frac": 0.25},
    },
    "pack": {"block_size": 16, "vocab_min_count": 2},
    "variants": {
        "dense": {"moe": False},
        "moe": {},
        "no_lb": {"lb_coef": 0.0, "collapse_stop": True},
        "top2": {"top_k": 2},
    },
    "run_variants": ["moe", "no_lb"],
    "seeds": [0],
    "analyze": {
        "n_permutations": 30,
        "n_bootstrap": 30,
        "n_shuffles": 3,
        "min_token_count": 3,
        "knockout_blocks": 6,
        "train_blocks": 12,
        "format_docs": 3,
        "batch_size": 16,
        "untrained_seeds": 3,
    },
}


def build_tiny_run(root: Path) -> Path:
    """data/{sampled,packed}, models/{base,dense,moe,no_lb} and reports/train/* of a 4-step run."""
    from moe_emergence.data.pack import run_pack
    from moe_emergence.training.runs import run_base, run_variant

    write_sampled(root / "data/sampled")
    run_pack(
        PackParams(block_size=16, vocab_min_count=2),
        root / "data/sampled",
        root / "data/packed",
        root / "reports/data/pack.json",
    )
    params = parse_params(copy.deepcopy(PARAMS))
    packed = root / "data/packed"
    run_base(params, packed, root / "models/base", root / "reports/train/base", work_root=root / "work")
    for name in ["dense", *params.run_variants]:
        run_variant(params, name, 0, packed, root / "models/base", root / "models" / name / "seed0",
                    root / "reports/train" / name / "seed0", work_root=root / "work")
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return build_tiny_run(tmp_path_factory.mktemp("run"))


def paths_in(root: Path, out: Path | None = None) -> Paths:
    return Paths(
        packed=root / "data/packed",
        sampled=root / "data/sampled",
        models=root / "models",
        train_reports=root / "reports/train",
        out=out or root / "reports",
    )


def test_report_builds_from_a_tiny_trained_run(tiny_run, tmp_path):
    params = parse_params(copy.deepcopy(PARAMS))
    out = tmp_path / "reports"
    results = run_analysis(params, paths_in(tiny_run, out), log=lambda m: None)

    md = (out / "report.md").read_text()
    for heading in (
        "Language-model quality",
        "Load balance and collapse, from step 0",
        "Domain specialization, against an untrained router",
        "Token identity vs context",
        "Consecutive tokens",
        "Router saturation",
        "Format-artifact test",
        "Eval vs train routing",
        "Python token types",
        "Expert knockout",
        "Figures",
    ):
        assert f"## {heading}" in md, heading
    assert not re.search(r"\bnan\b", md)
    t = results.table
    mi = t[(t.variant == "moe") & (t.metric == "mi_ratio") & (t.null == "untrained")].iloc[0]
    assert f"I(E;D)/H(D) {mi['value']:.3f} vs {mi['null_mean']:.3f} untrained" in md
    dense = json.loads((tiny_run / "reports/train/dense/seed0/metrics.json").read_text())["eval"]
    # the analysis re-measures the eval loss per target: the same number training reported
    assert f"{dense['lm_loss_macro']:.3f}" in md
    assert "bigram (counts)" in md and "margin over bigram" in md

    metrics = json.loads((out / "analysis/metrics.json").read_text())
    assert set(metrics) == {"baselines", "base", "dense", "moe", "no_lb"}
    assert metrics["dense"]["eval_loss_macro"] == pytest.approx(dense["lm_loss_macro"], abs=1e-4)
    for key in ("bigram_loss_macro", "unigram_loss_macro", "bigram_loss_code"):
        assert np.isfinite(metrics["baselines"][key]), key
    layer = metrics["moe"]["layer1"]
    assert layer["mi_ratio"] == pytest.approx(mi["value"], abs=1e-6)
    assert layer["mi_ratio_untrained"] == pytest.approx(mi["null_mean"], abs=1e-6)
    for key in ("mi_ratio_untrained_p95", "top_share_step0", "dead_experts_step0", "max_share", "top_share"):
        assert np.isfinite(layer[key]), key
    for key in ("eval_loss_macro_delta", "eval_loss_macro_delta_ci_low", "eval_loss_macro_delta_ci_high"):
        assert np.isfinite(metrics["moe"][key]), key
    assert "layer1" not in metrics["dense"]

    for path, _ in results.figures:
        assert (out / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert f"]({path})" in md
    names = {Path(p).name for p, _ in results.figures}
    assert {"domain_heatmaps.png", "training_curves.png", "against_untrained.png", "loads.png", "knockout.png",
            "saturation.png", "router_over_training.png", "token_types.png"} <= names
    assert (out / "analysis/curves/routing_moe_seed0.tsv").read_text().startswith("expert\tcode\tmath\tprose")
    assert (out / "analysis/table.tsv").read_text().startswith("variant\tseed\tlayer\tmetric\tvalue")
    assert "0 left out because their text was missing" in md  # provenance re-tokenizes every code doc
    assert not list(out.rglob("*.tmp"))


def test_step0_routing_is_recorded_and_reported(tiny_run):
    events = json.loads((tiny_run / "models/no_lb/seed0/events.json").read_text())
    s0 = events["step0"]
    assert set(s0) == {"eval", "train_window"}
    rec = s0["eval"]["layer1"]
    assert 0 < rec["top_share"] <= 1 and 1 <= rec["live_experts"] <= 4 and len(rec["fractions"]) == 4
    summary = json.loads((tiny_run / "reports/train/no_lb/seed0/metrics.json").read_text())
    assert summary["step0"]["eval"]["layer1"]["top_share"] == rec["top_share"]
    # the router curves start at step 0, before any update
    top = (tiny_run / "reports/train/no_lb/seed0/plots/metrics/router/layer1/top_share.tsv").read_text().splitlines()
    assert top[1].startswith("0\t")


def test_missing_run_names_the_stage_that_makes_it(tiny_run, tmp_path):
    params = parse_params({**copy.deepcopy(PARAMS), "run_variants": ["moe", "top2"]})
    with pytest.raises(FileNotFoundError, match=r"models/top2/seed0/model.safetensors not found.*dvc repro train@top2-0"):
        run_analysis(params, paths_in(tiny_run, tmp_path / "reports"), log=lambda m: None)
    assert not (tmp_path / "reports").exists()  # nothing published


def test_missing_training_summary_names_the_stage(tiny_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(tiny_run / "models", root / "models")
    shutil.copytree(tiny_run / "reports/train", root / "reports/train")
    (root / "reports/train/moe/seed0/metrics.json").unlink()
    paths = Paths(tiny_run / "data/packed", tiny_run / "data/sampled", root / "models", root / "reports/train",
                  root / "reports")
    params = parse_params({**copy.deepcopy(PARAMS), "run_variants": ["moe"]})
    with pytest.raises(FileNotFoundError, match=r"reports/train/moe/seed0/metrics.json not found.*train@moe-0"):
        run_analysis(params, paths, log=lambda m: None)


def test_a_sidecar_that_does_not_match_the_params_says_so(tiny_run):
    raw = copy.deepcopy(PARAMS)
    raw["model"]["n_experts"] = 8
    params = parse_params(raw)
    with pytest.raises(
        CheckpointError,
        match=r"moe/seed0/model.json does not match.*n_experts is 4, params.yaml says 8.*dvc repro train@moe-0",
    ):
        run_analysis(params, paths_in(tiny_run, tiny_run / "unused"), log=lambda m: None)
    _, side = load_model(tiny_run / "models/dense/seed0")
    mp, _ = params.variant("moe")
    with pytest.raises(CheckpointError, match="dense model, but the variant is a MoE variant"):
        check_sidecar(side, tiny_run / "models/dense/seed0", "moe/seed0", "train@moe-0",
                      None, MoESpec.from_params(mp))


def test_dense_only_run_reports_quality_only(tiny_run, tmp_path):
    params = parse_params({**copy.deepcopy(PARAMS), "run_variants": []})
    out = tmp_path / "reports"
    results = run_analysis(params, paths_in(tiny_run, out), log=lambda m: None)
    md = (out / "report.md").read_text()
    assert "## Domain specialization" not in md and "## Language-model quality" in md
    assert [Path(p).name for p, _ in results.figures] == ["training_curves.png"]
    assert set(json.loads((out / "analysis/metrics.json").read_text())) == {"baselines", "base", "dense"}


def _eval_table(root: Path):
    from moe_emergence.analysis.pipeline import read_sampled
    from moe_emergence.data.packed import load_packed

    packed = load_packed(root / "data/packed/eval.arrow")
    _, groups = read_sampled(root / "data/sampled", "eval")
    return packed, collect.token_table(packed, np.arange(len(packed)), DOMAINS, groups)


def test_token_table_gives_each_token_its_document_group_and_position(tiny_run):
    from moe_emergence.data.tokenizer import load_tokenizer

    packed, tab = _eval_table(tiny_run)
    enc = collect.Encoder(load_tokenizer("embedded"))
    eos = packed.meta["eos_id"]
    for d in range(len(tab.doc_ids)):
        i = int(str(tab.doc_ids[d]).split("-")[1])
        text = _doc(DOMAINS[tab.doc_domain[d]], i)
        want = np.append(enc(text)["input_ids"], eos)
        sel = tab.doc == d
        np.testing.assert_array_equal(tab.token_id[sel], want[tab.position[sel]])
        # every token of a document carries the document's group
        assert {str(tab.group_ids[g]) for g in np.unique(tab.group[sel])} == {
            f"{DOMAINS[tab.doc_domain[d]]}:{DOMAINS[tab.doc_domain[d]]}-g{i // 3:02d}"}
    assert (tab.domain == np.repeat(tab.block_domain, packed.block_size)).all()


def test_knockout_sends_the_disabled_experts_tokens_elsewhere(tiny_run):
    model, _ = load_model(tiny_run / "models/moe/seed0")
    from moe_emergence.data.vocab import Vocab

    _, tab = _eval_table(tiny_run)
    ids = Vocab.of_model(model).encode(tab.ids[:8]).astype(np.int64)
    before = collect.route(model, ids, 4)
    ((block, layer),) = moe_layers(model)
    busiest = int(np.bincount(before.top1(block), minlength=4).argmax())
    active = layer.active.clone()
    with collect.expert_disabled(layer, busiest):
        after = collect.route(model, ids, 4)
    assert (after.top1(block) != busiest).all()
    moved = before.top1(block) == busiest
    # its tokens go to their second choice; the others keep theirs
    assert (after.top1(block)[~moved] == before.top1(block)[~moved]).all()
    assert torch.equal(layer.active, active)
    again = collect.route(model, ids, 4)
    np.testing.assert_array_equal(again.top1(block), before.top1(block))


def test_route_matches_the_model_forward(tiny_run):
    model, _ = load_model(tiny_run / "models/no_lb/seed0")
    from moe_emergence.data.packed import load_packed
    from moe_emergence.data.vocab import Vocab

    raw = np.asarray(load_packed(tiny_run / "data/packed/eval.arrow").ids[:5], dtype=np.int64)
    ids = Vocab.of_model(model).encode(raw).astype(np.int64)
    r = collect.route(model, ids, 2, lm_loss=True)
    with torch.no_grad():
        model(input_ids=torch.from_numpy(ids))
    ((block, layer),) = moe_layers(model)
    np.testing.assert_array_equal(
        r.experts[block][:, 0], layer.routing.expert_idx[:, 0].numpy()
    )
    assert r.loss.shape == (5,) and np.isfinite(r.loss).all()
    assert r.lb[block] > 0 and np.isfinite(r.z[block])


def test_select_blocks_per_domain_is_balanced_and_seeded():
    dom = np.repeat([0, 1, 2], [50, 10, 30])
    sel = collect.select_blocks(dom, 12, seed=3, per_domain=True)
    assert np.bincount(dom[sel]).tolist() == [4, 4, 4]
    np.testing.assert_array_equal(sel, collect.select_blocks(dom, 12, seed=3, per_domain=True))
    assert len(collect.select_blocks(dom, 0, seed=0)) == 90


def test_knockout_reference_loss_is_the_eval_loss_of_the_same_blocks(tiny_run):
    from moe_emergence.data.vocab import Vocab

    model, _ = load_model(tiny_run / "models/moe/seed0")
    packed, tab = _eval_table(tiny_run)
    tab.ids = Vocab.of_model(model).encode(tab.ids).astype(np.int64)
    sel = collect.select_blocks(tab.block_domain, 9, seed=0, per_domain=True)
    base, knocked = collect.knockout_losses(model, tab.ids[sel], tab.block_domain[sel], DOMAINS, 4)
    full = collect.route(model, tab.ids[sel], 4, lm_loss=True).loss
    for i, d in enumerate(DOMAINS):
        assert base[d] == pytest.approx(full[tab.block_domain[sel] == i].mean(), abs=1e-5)
    assert set(knocked) == {(1, e) for e in range(4)}
    # the knocked-out loss with only the changed positions recomputed equals a full forward's
    ((block, layer),) = moe_layers(model)
    with collect.expert_disabled(layer, 0):
        again = collect.route(model, tab.ids[sel], 4, lm_loss=True).loss
    for i, d in enumerate(DOMAINS):
        assert knocked[(1, 0)][d] == pytest.approx(
            again[tab.block_domain[sel] == i].mean(), abs=1e-5
        )
