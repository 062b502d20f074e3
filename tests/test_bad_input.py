"""Wrong parameters and inputs, typed as a user types them: through `dvc exp run -S` and
through `dvc repro` after editing params.yaml or a data file. Each must stop with one
line `<stage>: error: <cause>` that names what to fix, never a bare traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from tests.pipeline_repo import DVC, copy_repo, run


@pytest.fixture(scope="module")
def repo(finished_repo, tmp_path_factory):
    return copy_repo(finished_repo[0], tmp_path_factory.mktemp("bad_input") / "repo")


def reset(repo: Path) -> None:
    run(["git", "checkout", "-q", "--", "."], repo)
    run(["git", "clean", "-fdq"], repo)  # files a case added (ignored outputs stay)
    run([DVC, "checkout", "-f", "-q"], repo, check=False)  # outputs the failed stage deleted


def check_one_line(out: str, stage: str, needles: tuple[str, ...]) -> None:
    prefix = "ERROR: " if stage == "dvc" else f"{stage}: error: "
    lines = [ln for ln in out.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])


EXP_CASES = [
    # (-S overrides, failing stage, what the message must name)
    (["model.top_k=9"], "train", ("model.top_k",)),
    (["model.n_experts=eight"], "train", ("model.n_experts",)),
    (["model.lb_coef=-0.1"], "train", ("model.lb_coef",)),
    (["model.moe_layers=[7]"], "train", ("model.moe_layers",)),
    (["+model.bogus=1"], "train", ("model.bogus",)),  # an unknown key
    (["train.optim.lr=fast"], "train", ("train.optim.lr",)),
    (["train.batch_size=0"], "train", ("train.batch_size",)),
    (["base.max_steps=-5"], "base", ("base.max_steps",)),
    (["pack.block_size=4"], "pack", ("pack.block_size",)),
    (["sample.size_mb=0"], "sample", ("sample.size_mb",)),
    (["sample.size_mb=500"], "sample", ("sample.size_mb",)),  # more than the corpus holds
    (["split.eval_fraction=1.5"], "split", ("split.eval_fraction",)),
    (["data.sources.code.kind=ftp"], "fetch", ("data.sources.code.kind",)),
    (["data.min_chars.prose=100000000"], "fetch", ("data.min_chars.prose",)),  # filters leave nothing
    (["run_variants=[moe,nope]"], "dvc", ("variants.nope", "params.yaml")),  # DVC's own check comes first
    (["analyze.n_permutations=0"], "analyze", ("analyze.n_permutations",)),
    # cross-section and model checks, each before any work of its stage
    (["train.batch_size=4096"], "train", ("train.batch_size", "train blocks")),  # more than the train set
    # a domain without an eval block: math's eval documents hold fewer tokens than one block
    (["pack.block_size=4096", "model.arch.n_positions=4096"], "pack", ("eval split", "'math'", "sample.size_mb")),
    (["model.n_experts=1"], "train", ("model.n_experts", "collapse_min_live")),
    (["run_variants=[moe,moe]"], "analyze", ("run_variants",)),  # would analyse moe twice
    (["model.init=inputs/no-such-model"], "base", ("model.init",)),  # a missing local model
    (["model.init=gpt2", "pack.vocab_min_count=0"], "base", ("model.init",)),  # the hub while offline
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides, stage, needles", EXP_CASES, ids=[" ".join(c[0]) for c in EXP_CASES])
def test_dvc_exp_run_with_a_bad_parameter(repo, overrides, stage, needles):
    reset(repo)
    args = [DVC, "exp", "run"]
    for o in overrides:
        args += ["-S", o]
    r = run(args, repo, check=False)
    assert r.returncode != 0
    check_one_line(r.stdout + r.stderr, stage, needles)


def _local_math(path: str, template: str = "{question}\n\n{answer}") -> Callable[[dict], None]:
    def edit(p: dict) -> None:
        p["data"]["sources"]["math"] = {"kind": "local", "path": path, "template": template}
    return edit


def _write(repo: Path, rel: str, text: str) -> None:
    (repo / rel).parent.mkdir(parents=True, exist_ok=True)
    (repo / rel).write_text(text)


RECORD = json.dumps({"question": "What is 2 + 3? Explain each step carefully.", "answer": "2 + 3 = 5. " * 3})

REPRO_CASES = {
    # name: (edit of params.yaml, files to add, failing stage, what the message must name)
    "local file missing": (_local_math("inputs/nope/*.jsonl"), {}, "fetch", ("data.sources.math", "matches no file")),
    "malformed jsonl line": (_local_math("inputs/math.jsonl"), {"inputs/math.jsonl": RECORD + "\n{not json\n"},
                             "fetch", ("inputs/math.jsonl line 2", "not valid JSON")),
    "record lacks a template field": (_local_math("inputs/math.jsonl", "{question}\n\n{solution}"),
                                      {"inputs/math.jsonl": RECORD + "\n"}, "fetch", ("solution",)),
    "empty local corpus": (_local_math("inputs/math.jsonl"), {"inputs/math.jsonl": ""}, "fetch",
                           ("data.sources.math",)),
    "hub source while offline": (
        lambda p: p["data"]["sources"].update(prose={"kind": "hf", "dataset": "wikitext",
                                                     "config": "wikitext-103-raw-v1", "template": "{text}"}),
        {}, "fetch", ("data.sources.prose", "embedded")),
    "section of the wrong type": (lambda p: p.update(sample=5), {}, "sample", ("sample",)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REPRO_CASES))
def test_dvc_repro_with_a_bad_input(repo, name):
    edit, files, stage, needles = REPRO_CASES[name]
    reset(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    edit(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for rel, text in files.items():
        _write(repo, rel, text)
    r = run([DVC, "repro"], repo, check=False)
    assert r.returncode != 0
    check_one_line(r.stdout + r.stderr, stage, needles)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_asking_for_a_gpu_on_a_cpu_machine(repo):
    reset(repo)
    r = run([DVC, "exp", "run", "-S", "train.device=cuda"], repo, check=False)
    assert r.returncode != 0
    check_one_line(r.stdout + r.stderr, "train", ("train.device", "cuda", "auto"))


STARTUP = """
import runpy, sys
sys.argv = [{module!r}, *{argv!r}]
try:
    runpy.run_module({module!r}, run_name="__main__")
except SystemExit as e:
    print("exit", e.code, "torch loaded" if "torch" in sys.modules else "torch not loaded")
"""


@pytest.mark.parametrize("module, argv", [
    ("stages.base", []),
    ("stages.train", ["--variant", "moe", "--seed", "0"]),
    ("stages.analyze", []),
])
def test_a_bad_parameter_is_reported_before_torch_loads(tmp_path, module, argv):
    """The heavy stages check params.yaml first: a typo costs a fraction of a second, not a torch import."""
    import subprocess
    import sys

    from tests.pipeline_repo import ROOT

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["top_k"] = 9
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code = STARTUP.format(module=module, argv=[*argv, "--params", str(tmp_path / "params.yaml")])
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "error: params.yaml: `model.top_k`" in r.stderr, r.stderr
    assert r.stdout.split() == ["exit", "2", "torch", "not", "loaded"], (r.stdout, r.stderr)
