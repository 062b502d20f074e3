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
from moe_emergence.analysis.pipeline import Paths, check_sidecar, run_analysis
from moe_emergence.config import PackParams, parse_params
from moe_emergence.model.checkpoint import CheckpointError, load_model
from moe_emergence.model.gpt2 import make_dense, moe_layers, to_moe

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


def write_sampled(directory: Path, n_docs: int = 36, n_eval: int = 10) -> None:
    from moe_emergence.data.documents import content_hash, make_table, write_docs

    for domain in DOMAINS:
        rows = []
        for i in range(n_docs):
            text = _doc(domain, i)
            rows.append(
                {
                    "doc_id": f"{domain}-{i:03d}",
                    "group_id": f"{domain}-{i:03d}",
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
    },
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
    "variants": {
        "dense": {"moe": False},
        "moe": {},
        "no_lb": {"lb_coef": 0.0, "collapse_stop": True},
        "top2": {"top_k": 2},
    },
    "run_variants": ["moe", "no_lb"],
    "analyze": {
        "n_permutations": 30,
        "n_bootstrap": 30,
        "n_shuffles": 3,
        "min_token_count": 3,
        "knockout_blocks": 6,
        "train_blocks": 12,
        "format_docs": 3,
        "batch_size": 16,
    },
}


def build_tiny_run(root: Path) -> Path:
    """data/{sampled,packed}, models/{dense,moe,no_lb} and reports/train/* of a 4-step run under `root`."""
    from moe_emergence.data.pack import run_pack
    from moe_emergence.training.runs import load_data
    from moe_emergence.training.trainer import RunSpec, Trainer

    write_sampled(root / "data/sampled")
    run_pack(
        PackParams(block_size=16),
        root / "data/sampled",
        root / "data/packed",
        root / "reports/data/pack.json",
    )
    params = parse_params(copy.deepcopy(PARAMS))
    train, evals = load_data(root / "data/packed")
    torch.manual_seed(0)
    base = make_dense(params.model.arch, seed=0)
    for name in ["dense", *params.run_variants]:
        mp, tp = params.variant(name)
        moe = params.is_moe(name)
        model = copy.deepcopy(base)
        if moe:
            model = to_moe(model, mp, seed=0)
        spec = RunSpec(
            name=name,
            train=tp,
            model=mp if moe else None,
            model_out=root / "models" / name,
            report_out=root / "reports/train" / name,
            work_dir=root / "work" / name,
        )
        Trainer(spec, model, train, evals).run()
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
        "Load balance and collapse",
        "Domain specialization",
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
    mi = results["variants"]["moe"]["layers"]["1"]["domain"]["mi_ratio"]
    assert f"I(E;D)/H(D) = {mi['value']:.3f}" in md
    dense_loss = json.loads((tiny_run / "reports/train/dense/metrics.json").read_text())["eval"][
        "lm_loss_macro"
    ]
    assert f"{dense_loss:.3f}" in md
    assert "dense: routing metrics skipped" in md

    metrics = json.loads((out / "analysis/metrics.json").read_text())
    assert set(metrics) == {"dense", "moe", "no_lb"}
    layer = metrics["moe"]["layer1"]
    assert layer["mi_ratio"] == pytest.approx(mi["value"])
    for key in (
        "mi_ratio_shuffled",
        "max_share",
        "top_share",
        "dead_experts",
        "token_id_accuracy",
        "majority_accuracy",
        "consecutive_rate",
        "consecutive_chance",
        "knockout_max_delta",
    ):
        assert np.isfinite(layer[key]), key
    assert metrics["dense"]["eval_loss_macro"] == pytest.approx(dense_loss)
    assert "layer1" not in metrics["dense"]

    for f in results["figures"]:
        png = out / f["path"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f["path"]
        assert f"]({f['path']})" in md
    names = {Path(f["path"]).name for f in results["figures"]}
    assert {
        "domain_heatmaps.png",
        "training_curves.png",
        "lb_comparison.png",
        "knockout.png",
        "saturation.png",
        "router_over_training.png",
        "token_types.png",
    } <= names
    assert (
        (out / "analysis/curves/routing_moe_layer1.tsv")
        .read_text()
        .startswith("expert\tcode\tmath\tprose")
    )
    assert (out / "analysis/curves/saturation_moe.tsv").read_text().startswith("step\tlayer1")
    assert (
        "0 left out because their text was missing" in md
    )  # provenance re-tokenizes every code doc
    assert not list(out.rglob("*.tmp"))


def test_missing_variant_names_the_stage_that_makes_it(tiny_run, tmp_path):
    params = parse_params({**copy.deepcopy(PARAMS), "run_variants": ["moe", "top2"]})
    with pytest.raises(FileNotFoundError, match=r"models/top2 not found.*dvc repro train@top2"):
        run_analysis(params, paths_in(tiny_run, tmp_path / "reports"), log=lambda m: None)
    assert not (tmp_path / "reports").exists()  # nothing published


def test_missing_training_summary_names_the_stage(tiny_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(tiny_run / "models", root / "models")
    (root / "reports/train/moe").mkdir(parents=True)
    shutil.copytree(tiny_run / "reports/train/dense", root / "reports/train/dense")
    paths = Paths(
        tiny_run / "data/packed",
        tiny_run / "data/sampled",
        root / "models",
        root / "reports/train",
        root / "reports",
    )
    params = parse_params({**copy.deepcopy(PARAMS), "run_variants": ["moe"]})
    with pytest.raises(
        FileNotFoundError, match=r"reports/train/moe/metrics.json not found.*train@moe"
    ):
        run_analysis(params, paths, log=lambda m: None)


def test_a_sidecar_that_does_not_match_the_params_says_so(tiny_run):
    raw = copy.deepcopy(PARAMS)
    raw["model"]["n_experts"] = 8
    params = parse_params(raw)
    with pytest.raises(
        CheckpointError,
        match=r"moe/model.json does not match.*n_experts is 4, params.yaml says 8"
        r".*dvc repro train@moe",
    ):
        run_analysis(params, paths_in(tiny_run, tiny_run / "unused"), log=lambda m: None)
    _, side = load_model(tiny_run / "models/dense")
    mp, _ = params.variant("moe")
    with pytest.raises(CheckpointError, match="dense model, but the variant is a MoE variant"):
        check_sidecar(side, tiny_run / "models/dense", "moe", mp, True)


def test_dense_only_run_skips_routing_with_a_reason(tiny_run, tmp_path):
    params = parse_params({**copy.deepcopy(PARAMS), "run_variants": []})
    out = tmp_path / "reports"
    results = run_analysis(params, paths_in(tiny_run, out), log=lambda m: None)
    md = (out / "report.md").read_text()
    assert "dense: routing metrics skipped (dense model: it has no router" in md
    assert "No MoE variant is listed in `run_variants`" in md
    assert "## Domain specialization" not in md and "## Language-model quality" in md
    assert [Path(f["path"]).name for f in results["figures"]] == ["training_curves.png"]
    assert set(json.loads((out / "analysis/metrics.json").read_text())) == {"dense"}


def test_token_table_gives_each_token_its_document_and_position(tiny_run):
    from moe_emergence.data.packed import load_packed
    from moe_emergence.data.tokenizer import load_tokenizer

    packed = load_packed(tiny_run / "data/packed/eval.arrow")
    tab = collect.token_table(packed, np.arange(len(packed)), DOMAINS)
    enc = collect.Encoder(load_tokenizer("embedded"))
    eos = packed.meta["eos_id"]
    for d in range(len(tab.doc_ids)):
        text = _doc(DOMAINS[tab.doc_domain[d]], int(str(tab.doc_ids[d]).split("-")[1]))
        want = np.append(enc(text)["input_ids"], eos)
        sel = tab.doc == d
        np.testing.assert_array_equal(tab.token_id[sel], want[tab.position[sel]])
    assert (tab.domain == np.repeat(tab.block_domain, packed.block_size)).all()


def test_knockout_sends_the_disabled_experts_tokens_elsewhere(tiny_run):
    model, _ = load_model(tiny_run / "models/moe")
    from moe_emergence.data.packed import load_packed

    ids = np.asarray(load_packed(tiny_run / "data/packed/eval.arrow").ids[:8], dtype=np.int64)
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
    model, _ = load_model(tiny_run / "models/no_lb")
    from moe_emergence.data.packed import load_packed

    ids = np.asarray(load_packed(tiny_run / "data/packed/eval.arrow").ids[:5], dtype=np.int64)
    r = collect.route(model, ids, 2, lm_loss=True)
    with torch.no_grad():
        model(input_ids=torch.from_numpy(ids))
    ((block, layer),) = moe_layers(model)
    np.testing.assert_array_equal(
        r.experts[block][:, 0], layer.last_routing.expert_idx[:, 0].numpy()
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
    from moe_emergence.data.packed import load_packed

    model, _ = load_model(tiny_run / "models/moe")
    packed = load_packed(tiny_run / "data/packed/eval.arrow")
    tab = collect.token_table(packed, np.arange(len(packed)), DOMAINS)
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
