"""The GPT-2 small profile with local stand-ins, so it runs end to end with no network.

`profiles/gpt2.yaml` as written, except: the hub datasets become local JSONL files in
`inputs/` (documents of the embedded corpora, grouped as they are there), the hub
tokenizer the embedded one (the same GPT-2 BPE ids), and `model.init` a randomly
initialized GPT-2 saved to a local directory (GPT-2 small's shape by default). The
GPU check runs it at full width for a few steps; the slow tests at a narrow width.

    python bench/standin.py /tmp/gpt2-standin --steps 20 --run     # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("code", "math", "prose")


def write_local_sources(inputs: Path, docs: int, min_chars: int = 0) -> dict[str, dict]:
    """`inputs/<domain>.jsonl` from the embedded corpora; the `data.sources` that read them.

    At least `docs` documents per domain, more where they hold fewer than `min_chars`
    characters (math problems are short: the sample stage refuses a domain below its budget).
    """
    from moe_emergence.core.config import DataParams, EmbeddedSource
    from moe_emergence.data.fetch import fetch_domain

    inputs.mkdir(parents=True, exist_ok=True)
    sources = {}
    for d in DOMAINS:
        n = docs
        while True:
            table, _, _ = fetch_domain(d, DataParams(sources={d: EmbeddedSource(kind="embedded", n_docs=n, max_docs=n)}))
            if sum(table.column("n_chars").to_pylist()) >= min_chars or table.num_rows < n:
                break  # enough characters, or the corpus holds no more
            n *= 2
        with open(inputs / f"{d}.jsonl", "w") as f:
            for text, group in zip(table.column("text").to_pylist(), table.column("group_id").to_pylist(), strict=True):
                f.write(json.dumps({"text": text, "group": group}) + "\n")
        sources[d] = {"kind": "local", "path": f"inputs/{d}.jsonl", "format": "jsonl", "template": "{text}",
                      "group_field": "group"}
    return sources


def write_random_gpt2(dest: Path, n_layer: int, n_embd: int, n_head: int, n_positions: int) -> None:
    """A randomly initialized GPT-2 in Hugging Face format: a stand-in for the hub's pretrained one."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions)
    GPT2LMHeadModel(cfg).save_pretrained(dest)


def standin_params(sources: dict, init: str, steps: int, block: int, size_mb: float) -> dict:
    p = yaml.safe_load((ROOT / "profiles/gpt2.yaml").read_text())
    p["data"]["sources"] = sources
    p["sample"].update(size_mb=size_mb, eval_max_mb=size_mb / 8)
    p["pack"].update(tokenizer="embedded", block_size=block)
    p["model"]["init"] = init
    p["train"].update(max_steps=steps, log_every=max(1, steps // 4), eval_every=max(1, steps // 2),
                      snapshot_every=max(1, steps // 2), resume_every=steps)
    p["analyze"].update(n_permutations=20, n_bootstrap=20, untrained_seeds=5, knockout_blocks=8,
                        train_blocks=16, format_docs=4, saturation_blocks=16)
    return p


def make_repo(dest: Path, params: dict) -> Path:
    """A git+DVC repository holding this project with `params`, committed."""
    for d in ("moe_emergence", "stages", "inputs", "profiles"):
        shutil.copytree(ROOT / d, dest / d, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", dest / "dvc.yaml")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / ".gitignore").write_text(".cache/\n__pycache__/\ndvc_plots/\n/models/\n/data/*/\n/standin-init/\n")

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True)

    git("init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=dest, check=True, capture_output=True)
    shutil.copytree(ROOT / ".dvc" / "plots", dest / ".dvc" / "plots", dirs_exist_ok=True)
    shutil.copy(ROOT / ".dvcignore", dest / ".dvcignore")
    git("add", "-A")
    git("-c", "user.name=standin", "-c", "user.email=standin@localhost", "commit", "-qm", "stand-in")
    return dest


def build(dest: Path, width: int = 768, heads: int = 12, steps: int = 20, block: int = 512,
          size_mb: float = 0.5, docs: int = 600) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    # 20% over the budget: the length filters and the split of the profile drop some
    sources = write_local_sources(dest / "inputs", docs, int(1.2 * size_mb * 2**20))
    write_random_gpt2(dest / "standin-init", 12, width, heads, block)
    return make_repo(dest, standin_params(sources, "standin-init", steps, block, size_mb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="an empty directory for the repository")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--size-mb", type=float, default=0.5, help="characters per domain, in MB")
    parser.add_argument("--run", action="store_true", help="then `dvc repro` there, and print one JSON summary")
    a = parser.parse_args()
    t0 = time.perf_counter()
    repo = build(a.dest, a.width, a.heads, a.steps, a.block, a.size_mb)
    built = time.perf_counter() - t0
    if not a.run:
        print(f"standin: repository in {repo} ({built:.0f} s); run `dvc repro` there")
        return
    t1 = time.perf_counter()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, capture_output=True, text=True, env=env)
    summary = {
        "repro_ok": r.returncode == 0, "build_s": round(built, 1), "repro_s": round(time.perf_counter() - t1, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
        "stages_run": sorted(set(ln.split("'")[1] for ln in r.stdout.splitlines() if ln.startswith("Running stage"))),
    }
    if r.returncode:
        summary["error_tail"] = (r.stdout + r.stderr)[-2000:]
    else:
        m = json.loads((repo / "reports/analysis/metrics.json").read_text())
        summary["eval_loss_macro"] = {v: m[v].get("eval_loss_macro") for v in m if isinstance(m[v], dict)
                                      and "eval_loss_macro" in m[v]}
    print(json.dumps(summary))
    sys.exit(0 if r.returncode == 0 else 1)


if __name__ == "__main__":
    main()
