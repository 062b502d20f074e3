"""A second machine and a second run: the data cache shared through a DVC remote, and
the same params giving the same bytes (data) and the same metrics (training)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.pipeline_repo import DVC, copy_repo, make_repo, run, tiny_model

DATA_STAGES = ("fetch", "split", "sample", "pack")


def ran(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", stdout))


def lock(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_dvc_remote_shares_the_cache_and_a_pulled_clone_reruns_nothing(finished_repo, tmp_path):
    a = copy_repo(finished_repo[0], tmp_path / "a")
    remote = tmp_path / "remote"
    run([DVC, "remote", "add", "-d", "shared", str(remote)], a)
    run(["git", "commit", "-qam", "use a shared DVC remote"], a)
    run([DVC, "push"], a)
    assert any(remote.rglob("*"))

    b = tmp_path / "b"  # the other machine: a git clone, nothing in its DVC cache
    run(["git", "clone", "-q", str(a), str(b)], tmp_path)
    assert not (b / "data/packed").exists() and not (b / "models/moe/seed0").exists()
    run([DVC, "pull"], b)
    assert files(b / "data/packed") == files(a / "data/packed")
    assert files(b / "models/moe/seed0") == files(a / "models/moe/seed0")
    # the README has the user run the tests before pulling: importing the package writes
    # bytecode caches into the very directories the stages list as deps
    run([sys.executable, "-m", "compileall", "-q", "moe_emergence", "stages"], b)  # what an import writes
    assert any((b / "moe_emergence/training").glob("__pycache__/*.pyc"))
    again = run([DVC, "repro"], b)
    assert ran(again.stdout) == set(), again.stdout  # everything pulled is up to date
    assert "up to date" in again.stdout
    st = run([DVC, "status"], b)
    assert "up to date" in st.stdout, st.stdout

    c = tmp_path / "c"  # a GPU box that wants the prepared data only
    run(["git", "clone", "-q", str(a), str(c)], tmp_path)
    run([DVC, "pull", "--with-deps", "pack"], c)
    assert files(c / "data/packed") == files(a / "data/packed") and not (c / "models/base").exists()
    assert ran(run([DVC, "repro", "pack"], c).stdout) == set()  # no data stage runs there


@pytest.mark.slow
def test_two_clean_data_runs_are_byte_identical(finished_repo, tmp_path):
    first = finished_repo[0]
    second = make_repo(tmp_path / "repo", tiny_model)  # a new repository, its own empty cache
    run([DVC, "repro", "pack"], second)
    for s in DATA_STAGES:
        assert lock(second)[s]["outs"] == lock(first)[s]["outs"], s
    assert files(second / "data") == files(first / "data")
    for f in ("fetch.json", "split.json", "sample.json", "pack.json"):
        assert (second / "reports/data" / f).read_bytes() == (first / "reports/data" / f).read_bytes(), f


@pytest.mark.slow
def test_a_second_training_run_with_the_same_seed_gives_the_same_bytes(finished_repo, tmp_path):
    """The dense base here; a MoE run in test_pipeline.py (the ablation re-runs no_lb unchanged)."""
    src = finished_repo[0]
    repo = copy_repo(src, tmp_path / "repo")
    base = run([DVC, "repro", "-f", "-s", "base"], repo)
    assert ran(base.stdout) == {"base"}
    assert lock(repo)["base"]["outs"] == lock(src)["base"]["outs"]  # model and curves: the same bytes, so...
    # ...nothing downstream re-runs: no output carries a wall-clock figure
    assert ran(run([DVC, "repro"], repo).stdout) == set()
