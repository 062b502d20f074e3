"""A throwaway git+DVC repository holding a copy of the project, for end-to-end pipeline tests."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")


def env(repo: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["PYTHONPATH"] = str(repo)  # the copied package, not the checkout's
    # as on a user's machine: bytecode caches appear next to the sources (.dvcignore keeps
    # them out of the dep hashes; this checks that it does)
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    e.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
             GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1")
    return e


def run(args: list[str], repo: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    r = subprocess.run(args, cwd=repo, env=env(repo), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def stage_here(repo: Path, cmd: list[str]) -> subprocess.CompletedProcess:
    """Run a stage's `python -m stages.<name> ...` command inside this process, in `repo`.

    The same `run_stage` entry point as in its own process, without the seconds of importing
    torch and transformers again: for the cases that stop a stage with an error before it
    publishes anything. (Cases that reach for the hub need a fresh process: the hub client
    reads HF_HUB_OFFLINE once, when it is first imported.)
    """
    assert cmd[:2] == ["python", "-m"], cmd
    out, err = io.StringIO(), io.StringIO()
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(repo)
    sys.argv = [cmd[2], *cmd[3:]]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_module(cmd[2], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(cwd)
        sys.argv = argv
    return subprocess.CompletedProcess(cmd, code, out.getvalue(), err.getvalue())


def make_repo(repo: Path, edit: Callable[[dict], None]) -> Path:
    """Copy the package, stages, dvc.yaml and an edited params.yaml into `repo`; git init, commit, dvc init."""
    shutil.copytree(ROOT / "moe_emergence", repo / "moe_emergence", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / "inputs", repo / "inputs")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text(".cache/\n__pycache__/\ndvc_plots/\n")
    run(["git", "init", "-q"], repo)
    run([DVC, "init", "-q"], repo)
    shutil.copy(ROOT / ".dvcignore", repo)  # after `dvc init`, which writes an empty one
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots", dirs_exist_ok=True)  # plot templates
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "init"], repo)
    return repo


def tiny_data(p: dict) -> None:
    """About 50 KB of text per domain from the first few hundred documents of each corpus, each
    of at most 3,000 characters: the eval set (at least 12 documents per domain) stays small,
    and so does every pass over it."""
    p["sample"]["size_mb"] = 0.05
    p["data"]["max_chars"] = 3000
    p["data"]["sources"]["math"]["n_docs"] = 300
    p["data"]["sources"]["code"]["max_docs"] = 400
    p["data"]["sources"]["prose"]["max_docs"] = 300


def tiny_model(p: dict) -> None:
    """A 2-block, 32-wide GPT-2 with MoE in block 1, a few steps of everything."""
    tiny_data(p)
    p["pack"]["block_size"] = 32
    p["model"]["arch"] = {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 32}
    p["model"]["moe_layers"] = [1]
    p["base"].update(max_steps=4, batch_size=4)
    p["train"].update(max_steps=4, batch_size=4, log_every=2, eval_every=2, snapshot_every=2,
                      resume_every=2, eval_batch_size=16)
    p["analyze"].update(n_permutations=20, n_bootstrap=20, untrained_seeds=9)


def copy_repo(src: Path, dst: Path, forget: tuple[str, ...] = ()) -> Path:
    """A full copy (work tree, git, DVC cache).

    `forget` names stages to make unfinished, as on a machine where they never completed:
    their entries leave dvc.lock and the run-cache is dropped, so the next `dvc repro`
    executes them (it cannot just check out their outputs from an earlier run).
    """
    shutil.copytree(src, dst, symlinks=True)
    if forget:
        shutil.rmtree(dst / ".dvc" / "cache" / "runs", ignore_errors=True)
        lock = yaml.safe_load((dst / "dvc.lock").read_text())
        for stage in forget:
            del lock["stages"][stage]
        (dst / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    return dst
