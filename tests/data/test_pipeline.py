"""End to end: the data stages of the shared tiny `dvc repro` (packed data, reports, no leakage,
a no-op second run) and one-line errors from the stage commands. Byte-identical data from a
second, independent run is checked in tests/test_reproducible.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.pipeline_repo import copy_repo, make_repo, run, tiny_data

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(args, repo, check=True):
    return run(args, repo, check=check, timeout=600)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("e2e"), tiny_data)


@pytest.mark.slow
def test_dvc_repro_pack_end_to_end(finished_repo, tmp_path):
    """The data stages of the shared finished run (a fresh repository's first `dvc repro`);
    tests/test_reproducible.py runs them again in a new repository and compares the bytes."""
    import json

    from moe_emergence.data.packed import load_packed

    src, first = finished_repo
    for stage in ("fetch", "split", "sample", "pack"):
        assert f"Running stage '{stage}'" in first, stage
    repo = copy_repo(src, tmp_path / "repo")
    train, ev = load_packed(repo / "data/packed/train.arrow"), load_packed(repo / "data/packed/eval.arrow")
    assert train.block_size == 32 and len(train) > 0 and len(ev) > 0
    assert sorted(set(train.domains)) == ["code", "math", "prose"] == sorted(set(ev.domains))
    counts = {d: int((train.domains == d).sum()) for d in ("code", "math", "prose")}
    assert len(set(counts.values())) == 1  # balanced
    for f in ("fetch.json", "split.json", "sample.json", "pack.json", "artifacts.json", "report.md"):
        assert (repo / "reports/data" / f).exists(), f
    assert len(list((repo / "reports/data/samples").glob("*.txt"))) == 3
    split = json.loads((repo / "reports/data/split.json").read_text())
    assert split["leakage"]["shared_content_hashes"] == 0 and split["leakage"]["groups_on_both_sides"] == 0

    again = _run([str(BIN / "dvc"), "repro", "pack"], repo)
    assert "Running stage" not in again.stdout and "up to date" in again.stdout


@pytest.mark.parametrize(
    "stage, args, params_edit, message",
    [
        ("fetch", ["--out", "x/raw", "--report", "x/f.json"], lambda p: p["pack"].update(block_size=3),
         "pack.block_size"),
        ("fetch", ["--out", "x/raw", "--report", "x/f.json"],
         lambda p: p["data"]["sources"].update(math={"kind": "local", "path": "inputs/nope/*.jsonl", "template": "{q}"}),
         "matches no file"),
        # a local file outside inputs/ would be read but not tracked: editing it would not re-run fetch
        ("fetch", ["--out", "x/raw", "--report", "x/f.json"],
         lambda p: p["data"]["sources"].update(math={"kind": "local", "path": "/tmp/m.jsonl", "template": "{q}"}),
         "must lie under inputs/"),
        ("split", ["--raw", "x/none", "--out", "x/split", "--report", "x/s.json"], None, "run `dvc repro fetch` first"),
        ("pack", ["--sampled", "x/none", "--out", "x/packed", "--report", "x/p.json", "--report-dir", "x"], None,
         "run `dvc repro sample` first"),
    ],
)
def test_stage_errors_are_one_line(repo, tmp_path, monkeypatch, capsys, stage, args, params_edit, message):
    """In process (runpy) for speed; the subprocess test below checks a real command line."""
    import runpy

    params = yaml.safe_load((repo / "params.yaml").read_text())
    if params_edit:
        params_edit(params)
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"stages/{stage}.py", "--params", str(pfile), *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT / "stages" / f"{stage}.py"), run_name="__main__")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{stage}: error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


@pytest.mark.slow
def test_stage_error_from_the_command_line(repo, tmp_path):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["sample"]["size_mb"] = -1
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    r = _run([sys.executable, "stages/sample.py", "--params", str(pfile), "--split", "x/none"], repo, check=False)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["sample: error: params.yaml: `sample.size_mb` must be > 0.0, got -1"]
