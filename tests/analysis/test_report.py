import copy
import re

import pytest

from moe_emergence.analysis.report import build_report


def test_report_builds_and_states_numbers_with_their_baselines(results):
    md = build_report(results)
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
        assert f"## {heading}" in md
    d = results["variants"]["moe"]["layers"]["3"]["domain"]["mi_ratio"]
    # the sentence carries the value, its CI, and the shuffled baseline computed from `results`
    sentence = (
        f"layer 3: I(E;D)/H(D) = {d['value']:.3f} (95% CI {d['ci_low']:.3f}-{d['ci_high']:.3f}) "
        f"vs {d['null_mean']:.3f} under shuffled domain labels (95th pct {d['null_p95']:.3f})"
    )
    assert sentence in md
    assert "no_lb: collapse detected at step 60 in layer 3" in md
    assert "dense: routing metrics skipped (dense model, no router)" in md
    assert "![Expert routing by domain](figures/domain_heatmaps.png)" in md
    assert not re.search(r"\bnan\b", md)


def test_numbers_follow_the_results(results):
    r = copy.deepcopy(results)
    r["variants"]["moe"]["layers"]["2"]["domain"]["mi_ratio"].update(value=0.4321, null_mean=0.0123)
    md = build_report(r)
    assert "layer 2: I(E;D)/H(D) = 0.432" in md and "vs 0.012 under shuffled domain labels" in md


def test_missing_sections_are_left_out_and_dense_only_runs_still_report():
    dense_only = {
        "domains": ["code", "math"],
        "n_experts": 8,
        "variants": {
            "dense": {
                "moe": False,
                "skipped": "dense model, no router",
                "eval": {
                    "step": 5,
                    "loss": 3.0,
                    "loss_macro": 3.1,
                    "per_domain": {"code": 2.0, "math": 4.2},
                },
            }
        },
    }
    md = build_report(dense_only)
    assert "## Language-model quality" in md and "## Domain specialization" not in md
    assert "No variant has routing results" in md
    with pytest.raises(ValueError, match="lack `variants`"):
        build_report({"domains": [], "n_experts": 8})


def test_report_is_deterministic(results):
    assert build_report(results) == build_report(copy.deepcopy(results))
