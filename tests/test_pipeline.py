"""The whole workflow a user types, on a tiny profile in a throwaway git+DVC repository:
`dvc repro`, then `dvc exp run -S model.lb_coef=0`, then `dvc metrics diff`."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.pipeline_repo import DVC, copy_repo, run

DATA_STAGES = ("fetch", "split", "sample", "pack")


def ran(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", stdout))


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_to_a_report(finished_repo, tmp_path):
    first = finished_repo[1]
    repo = copy_repo(finished_repo[0], tmp_path / "repo")
    assert ran(first) >= {*DATA_STAGES, "base", "train_dense@0", "train@moe-0", "train@no_lb-0", "analyze"}
    for v in ("dense", "moe", "no_lb"):
        m = json.loads((repo / f"reports/train/{v}/seed0/metrics.json").read_text())
        assert m["steps"] >= 1 and m["eval"]["lm_loss"] > 0, v
        # no wall-clock figure (it would show in every `dvc metrics diff`), no -1 for "no collapse"
        assert "collapse" in m and "tokens_per_s" not in m["train"]
        assert ("step" in m["collapse"]) == bool(m["collapse"]["detected"])
    report = (repo / "reports/report.md").read_text()
    assert "I(E;D)/H(D)" in report and "untrained" in report and "bigram" in report
    assert any((repo / "reports/figures").glob("*.png"))
    again = run([DVC, "repro"], repo)
    assert ran(again.stdout) == set()  # a second repro is a no-op


@pytest.mark.slow
def test_ablation_reruns_only_the_moe_variants_and_the_analysis(finished_repo, tmp_path):
    repo = copy_repo(finished_repo[0], tmp_path / "repo")
    exp = run([DVC, "exp", "run", "-S", "model.lb_coef=0"], repo)
    stages = ran(exp.stdout)
    assert "train@moe-0" in stages and "analyze" in stages
    assert not stages & {*DATA_STAGES, "base", "train_dense@0"}, stages
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock["train@moe-0"]["params"]["params.yaml"]["model"]["lb_coef"] == 0
    # no_lb re-ran (it reads `model`) with the same effective params (its own lb_coef is 0):
    # the same seed gives the same model and curves, bit for bit
    before = yaml.safe_load((finished_repo[0] / "dvc.lock").read_text())["stages"]
    assert lock["train@no_lb-0"]["outs"] == before["train@no_lb-0"]["outs"]
    assert lock["train@moe-0"]["outs"] != before["train@moe-0"]["outs"]
    diff = run([DVC, "metrics", "diff", "--json"], repo)
    changed = json.loads(diff.stdout)
    assert "reports/train/moe/seed0/metrics.json" in changed
    assert "reports/train/dense/seed0/metrics.json" not in changed  # dense did not re-run


@pytest.mark.slow
def test_editing_the_format_perturbations_flags_only_analyze(finished_repo, tmp_path):
    repo = copy_repo(finished_repo[0], tmp_path / "repo")
    path = repo / "moe_emergence/analysis/perturb.py"
    path.write_text(path.read_text() + "\n# an edit of the perturbation table\n")
    status = json.loads(run([DVC, "status", "--json"], repo).stdout)
    assert set(status) == {"analyze"}, status
