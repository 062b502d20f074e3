"""The GPT-2 small profile end to end, offline: `profiles/gpt2.yaml` with local stand-ins
(local JSONL for the hub datasets, a random 12-layer GPT-2 for the pretrained base) at a
narrow width, through `dvc repro` in a throwaway repository (bench/standin.py builds it)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from bench.standin import build
from tests.pipeline_repo import DVC, run


@pytest.fixture(scope="module")
def profile_repo(tmp_path_factory):
    repo = build(tmp_path_factory.mktemp("gpt2") / "repo", width=64, heads=4, steps=4, block=64, size_mb=0.1, docs=200)
    # The full 50,257-id LM head makes every pass over the eval set cost seconds: a small
    # eval set (4 groups per domain), evaluated once per run (at the last step), and a
    # subset of it analysed.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["sample"].update(eval_min_groups=4, eval_max_mb=0.004)
    params["train"]["eval_every"] = params["train"]["max_steps"]
    params["analyze"].update(max_eval_blocks=60, knockout_blocks=0, train_blocks=0, format_docs=0,
                             saturation_blocks=0)  # the tiny pipeline runs those
    params["run_variants"] = ["moe"]  # every stage once; no_lb is the same stage with other params
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([DVC, "repro"], repo, timeout=1500)
    return repo, out.stdout


@pytest.mark.slow
def test_the_profile_runs_every_stage_and_reports_layers_8_to_11(profile_repo):
    repo, stdout = profile_repo
    for stage in ("fetch", "split", "sample", "pack", "base", "train_dense@0", "train@moe-0", "analyze"):
        assert f"Running stage '{stage}'" in stdout, stage
    report = (repo / "reports/report.md").read_text()
    assert all(f"layer {i}" in report or f"L{i}" in report for i in (8, 9, 10, 11))
    out = json.loads(run([DVC, "plots", "show", "--json"], repo).stdout)["data"]
    series = {p["series"] for p in out["router_top_share"][0]["content"]["data"]["values"]}
    assert {f"moe seed0 layer{i}" for i in (8, 9, 10, 11)} <= series
    for pid in ("train_lm_loss", "eval_lm_loss", "router_live_experts"):
        assert out[pid][0]["content"]["data"]["values"], pid


@pytest.mark.slow
def test_the_profiles_models_load_with_transformers_and_the_project_loader(profile_repo):
    from transformers import GPT2LMHeadModel

    from moe_emergence.model.checkpoint import load_model

    repo = profile_repo[0]
    ids = torch.tensor([[464, 3290, 318, 257, 1332]])
    for name in ("base", "dense/seed0"):
        hf = GPT2LMHeadModel.from_pretrained(repo / "models" / name).eval()
        ours, _ = load_model(repo / "models" / name)
        with torch.no_grad():
            assert torch.allclose(hf(ids).logits, ours.eval()(ids).logits, atol=1e-5), name
    moe, side = load_model(repo / "models/moe/seed0")
    with torch.no_grad():
        assert torch.isfinite(moe.eval()(ids).logits).all()
    assert side["extra"]["step"] == 4 and side["moe"]["moe_layers"] == [8, 9, 10, 11]
