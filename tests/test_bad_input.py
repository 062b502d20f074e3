"""Wrong parameters and inputs, as a user makes them: a value set with `dvc exp run -S` or
edited into params.yaml, a broken data file. Each must stop the stage with one line
`<stage>: error: <cause>` that names what to fix, never a bare traceback, and leave every
output as it was.

Every case runs the failing stage's command as dvc.yaml writes it, in a copy of the finished
tiny pipeline: in this process (`stage_here`, the same entry point without importing torch
again), or in its own where the hub client is involved. A sample also goes through
`dvc exp run -S` and `dvc repro`: DVC runs the named stage first (the stages above it are
up to date) and passes its line on.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from tests.pipeline_repo import DVC, ROOT, copy_repo, env, run, stage_here

OUTPUTS = ("data", "models", "reports")


@pytest.fixture(scope="module")
def repo(finished_repo, tmp_path_factory):
    return copy_repo(finished_repo[0], tmp_path_factory.mktemp("bad_input") / "repo")


def set_key(params: dict, override: str) -> None:
    """Apply one `dvc exp run -S` override (`key.path=value`, `+key=value` adds a key) to params."""
    key, _, value = override.lstrip("+").partition("=")
    *parents, last = key.split(".")
    node = params
    for k in parents:
        node = node[k]
    node[last] = yaml.safe_load(value)


def stage_command(repo: Path, stage: str) -> list[str]:
    """The stage's `cmd` from dvc.yaml, for the run `train@moe-0` (one process)."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][stage]
    values = {"train.nproc": "1", "item": "0", "item.variant": "moe", "item.seed": "0"}
    cmd = re.sub(r"\$\{([^}]+)\}", lambda m: values[m[1]], spec.get("cmd") or spec["do"]["cmd"])
    return shlex.split(cmd)


def snapshot(repo: Path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(repo)): (f.stat().st_size, f.stat().st_mtime_ns)
            for d in OUTPUTS for f in (repo / d).rglob("*") if f.is_file()}


def check_one_line(out: str, stage: str, needles: tuple[str, ...]) -> None:
    prefix = "ERROR: " if stage == "dvc" else f"{stage}: error: "
    lines = [ln for ln in out.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])


def overrides(*keys: str) -> Callable[[dict], None]:
    def edit(p: dict) -> None:
        for k in keys:
            set_key(p, k)
    return edit


def local_math(path: str, template: str = "{question}\n\n{answer}") -> Callable[[dict], None]:
    return overrides(f"data.sources.math={json.dumps({'kind': 'local', 'path': path, 'template': template})}")


def apply_case(repo: Path, edit: Callable[[dict], None], files: dict[str, str]) -> None:
    """Write the case's params.yaml and data files into `repo`."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    edit(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)


RECORD = json.dumps({"question": "What is 2 + 3? Explain each step carefully.", "answer": "2 + 3 = 5. " * 3})

CASES = {
    # id: (edit of params.yaml, files to add, failing stage, what the message must name)
    "model.top_k=9": (overrides("model.top_k=9"), {}, "train", ("model.top_k",)),
    "model.n_experts=eight": (overrides("model.n_experts=eight"), {}, "train", ("model.n_experts",)),
    "model.lb_coef=-0.1": (overrides("model.lb_coef=-0.1"), {}, "train", ("model.lb_coef",)),
    "model.moe_layers=[7]": (overrides("model.moe_layers=[7]"), {}, "train", ("model.moe_layers",)),
    "+model.bogus=1": (overrides("+model.bogus=1"), {}, "train", ("model.bogus",)),  # an unknown key
    "train.optim.lr=fast": (overrides("train.optim.lr=fast"), {}, "train", ("train.optim.lr",)),
    "train.batch_size=0": (overrides("train.batch_size=0"), {}, "train", ("train.batch_size",)),
    "base.max_steps=-5": (overrides("base.max_steps=-5"), {}, "base", ("base.max_steps",)),
    "pack.block_size=4": (overrides("pack.block_size=4"), {}, "pack", ("pack.block_size",)),
    "sample.size_mb=0": (overrides("sample.size_mb=0"), {}, "sample", ("sample.size_mb",)),
    # more than the corpus holds
    "sample.size_mb=500": (overrides("sample.size_mb=500"), {}, "sample", ("sample.size_mb",)),
    "split.eval_fraction=1.5": (overrides("split.eval_fraction=1.5"), {}, "split", ("split.eval_fraction",)),
    "data.sources.code.kind=ftp": (overrides("data.sources.code.kind=ftp"), {}, "fetch",
                                   ("data.sources.code.kind",)),
    # the filters leave nothing
    "data.min_chars.prose=100000000": (overrides("data.min_chars.prose=100000000"), {}, "fetch",
                                       ("data.min_chars.prose",)),
    "analyze.n_permutations=0": (overrides("analyze.n_permutations=0"), {}, "analyze",
                                 ("analyze.n_permutations",)),
    "a section of the wrong type": (lambda p: p.update(sample=5), {}, "sample", ("sample",)),
    # cross-section and model checks, each before any work of its stage
    "train.batch_size=4096": (overrides("train.batch_size=4096"), {}, "train",
                              ("train.batch_size", "train blocks")),  # more than the train set
    # a domain without an eval block: math's eval documents hold fewer tokens than one block
    "pack.block_size=4096 model.arch.n_positions=4096": (
        overrides("pack.block_size=4096", "model.arch.n_positions=4096"), {}, "pack",
        ("eval split", "'math'", "sample.size_mb")),
    "model.n_experts=1": (overrides("model.n_experts=1"), {}, "train", ("model.n_experts", "collapse_min_live")),
    # would analyse moe twice
    "run_variants=[moe,moe]": (overrides("run_variants=[moe,moe]"), {}, "analyze", ("run_variants",)),
    # a missing local model, and the hub while offline
    "model.init=inputs/no-such-model": (overrides("model.init=inputs/no-such-model"), {}, "base", ("model.init",)),
    "model.init=gpt2": (overrides("model.init=gpt2", "pack.vocab_min_count=0"), {}, "base", ("model.init",)),
    "train.device=cuda": (overrides("train.device=cuda"), {}, "train", ("train.device", "cuda", "auto")),
    # data files
    "local file missing": (local_math("inputs/nope/*.jsonl"), {}, "fetch", ("data.sources.math", "matches no file")),
    "malformed jsonl line": (local_math("inputs/math.jsonl"), {"inputs/math.jsonl": RECORD + "\n{not json\n"},
                             "fetch", ("inputs/math.jsonl line 2", "not valid JSON")),
    "record lacks a template field": (local_math("inputs/math.jsonl", "{question}\n\n{solution}"),
                                      {"inputs/math.jsonl": RECORD + "\n"}, "fetch", ("solution",)),
    "empty local corpus": (local_math("inputs/math.jsonl"), {"inputs/math.jsonl": ""}, "fetch",
                           ("data.sources.math",)),
    "hub source while offline": (
        overrides('data.sources.prose={"kind": "hf", "dataset": "wikitext", "config": "wikitext-103-raw-v1", '
                  '"template": "{text}"}'), {}, "fetch", ("data.sources.prose", "embedded")),
}


# the hub client reads HF_HUB_OFFLINE when first imported: these run as DVC runs them
FRESH_PROCESS = {"model.init=gpt2", "hub source while offline"}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_stops_its_stage_with_one_line(repo, case):
    edit, files, stage, needles = CASES[case]
    if case == "train.device=cuda" and torch.cuda.is_available():
        pytest.skip("the machine has a GPU")
    original = (repo / "params.yaml").read_text()
    before = snapshot(repo)
    try:
        apply_case(repo, edit, files)
        cmd = stage_command(repo, stage)
        if case in FRESH_PROCESS:
            r = subprocess.run(cmd, cwd=repo, env=env(repo), capture_output=True, text=True, timeout=600)
        else:
            r = stage_here(repo, cmd)
    finally:
        (repo / "params.yaml").write_text(original)
        for rel in files:
            (repo / rel).unlink()
    assert r.returncode == 2, (r.returncode, r.stderr[-4000:])
    check_one_line(r.stderr, stage, needles)
    assert snapshot(repo) == before  # no output touched


def reset(repo: Path) -> None:
    """After a DVC case: the committed params and files, and the outputs DVC removed."""
    run(["git", "checkout", "-q", "--", "."], repo)
    run(["git", "clean", "-fdq"], repo)  # files a case added (ignored outputs stay)
    run([DVC, "checkout", "-f", "-q"], repo, check=False)  # outputs the failed stage deleted


THROUGH_DVC = [
    # (-S overrides, the stage DVC runs first and that fails, what the message must name)
    (["+model.bogus=1"], "train", ("model.bogus",)),  # `+` adds a key: DVC's override grammar
    (["data.sources.code.kind=ftp"], "fetch", ("data.sources.code.kind",)),
    (["run_variants=[moe,nope]"], "dvc", ("variants.nope", "params.yaml")),  # DVC's own check comes first
]


@pytest.mark.slow
@pytest.mark.parametrize("sets, stage, needles", THROUGH_DVC, ids=[" ".join(c[0]) for c in THROUGH_DVC])
def test_dvc_exp_run_with_a_bad_parameter(repo, sets, stage, needles):
    args = [DVC, "exp", "run"]
    for o in sets:
        args += ["-S", o]
    r = run(args, repo, check=False)
    reset(repo)
    assert r.returncode != 0
    check_one_line(r.stdout + r.stderr, stage, needles)


@pytest.mark.slow
def test_dvc_repro_with_a_malformed_data_file(repo):
    edit, files, stage, needles = CASES["malformed jsonl line"]
    apply_case(repo, edit, files)
    r = run([DVC, "repro"], repo, check=False)
    reset(repo)
    assert r.returncode != 0
    check_one_line(r.stdout + r.stderr, stage, needles)


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
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["top_k"] = 9
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code = STARTUP.format(module=module, argv=[*argv, "--params", str(tmp_path / "params.yaml")])
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "error: params.yaml: `model.top_k`" in r.stderr, r.stderr
    assert r.stdout.split() == ["exit", "2", "torch", "not", "loaded"], (r.stdout, r.stderr)
