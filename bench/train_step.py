"""MoE vs dense train-step time on the CPU profile, as a ratio measured in one run.

Both models are built from params.yaml (the CPU profile's GPT-2 shape, MoE in
`model.moe_layers`, upcycled from the same dense model) and trained with the
project's own `Trainer.train_step` (forward, LM + aux losses, backward, clip,
AdamW) on the same random token blocks, in interleaved rounds so that a noisy
neighbour slows both alike. Reports median step times and their ratio.

    python bench/train_step.py --json [--steps 12] [--params params.yaml] [--profile]
                                [--default-malloc] [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from moe_emergence.core.allocator import keep_freed_memory
from moe_emergence.core.config import load_params
from moe_emergence.model.gpt2 import make_dense, to_moe
from moe_emergence.model.spec import ArchSpec, MoESpec
from moe_emergence.training.trainer import PackedSplit, RunSpec, Trainer


def _packed_vocab() -> int | None:
    """The model vocabulary the pipeline uses, when the data has been packed."""
    from moe_emergence.data.vocab import Vocab

    p = Path("data/packed/vocab.json")
    return Vocab.read(p).size if p.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true",
                    help="also print the top operators of one profiled step of each model (torch.profiler)")
    parser.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's mmap/trim thresholds as they are (the stages raise them: "
                         "moe_emergence.core.allocator)")
    parser.add_argument("--vocab", type=int, default=None,
                    help="embedding rows (default: data/packed/vocab.json's size if present, else 50,257)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: CPU autocast (needs AVX512-BF16/AMX to be fast)")
    a = parser.parse_args()
    malloc_tuned = False if a.default_malloc else keep_freed_memory()

    params = load_params(a.params)
    mp, tp = params.variant("moe")
    tp = tp.model_copy(update=dict(max_steps=a.steps + a.warmup + 1, device="cpu", precision=a.precision))
    block = mp.arch.n_positions
    rng = np.random.default_rng(0)
    n_blocks = tp.batch_size * tp.grad_accum * (a.steps + a.warmup + 1)
    vocab = a.vocab or _packed_vocab() or 50257
    ids = rng.integers(0, vocab, size=(n_blocks, block)).astype(np.uint16)
    data = PackedSplit(ids=ids, domain_codes=np.arange(n_blocks) % 3, domain_names=["code", "math", "prose"])

    torch.manual_seed(0)
    base = make_dense(ArchSpec.from_params(mp.arch), vocab_size=vocab)
    dense = make_dense(ArchSpec.from_params(mp.arch), vocab_size=vocab)
    dense.load_state_dict(base.state_dict())
    moe = to_moe(base, MoESpec.from_params(mp), seed=0, calibration=torch.from_numpy(ids[:64].astype(np.int64)))  # upcycled from the same weights
    with tempfile.TemporaryDirectory() as tmp:
        def trainer(name: str, model: torch.nn.Module, is_moe: bool) -> Trainer:
            spec = RunSpec(name=name, train=tp, model=mp if is_moe else None, model_out=Path(tmp) / name,
                           report_out=Path(tmp) / f"r_{name}", work_dir=Path(tmp) / f"w_{name}")
            return Trainer(spec, model, data, data)

        runs = {"dense": trainer("dense", dense, False), "moe": trainer("moe", moe, True)}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for i in range(a.warmup + a.steps):
            for name, t in runs.items():
                t0 = time.perf_counter()
                t.train_step()
                if i >= a.warmup:
                    times[name].append(time.perf_counter() - t0)
        if a.profile:
            for name, t in runs.items():
                with torch.profiler.profile() as prof:
                    t.train_step()
                print(f"--- {name}: one step, top operators by self CPU time", file=sys.stderr)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = tp.batch_size * tp.grad_accum * block
    out = {
        "config": {"vocab": vocab, "arch": mp.arch.model_dump(), "moe_layers": mp.moe_layers, "n_experts": mp.n_experts,
                   "top_k": mp.top_k, "tokens_per_step": tokens, "threads": torch.get_num_threads(),
                   "steps": a.steps, "malloc_tuned": malloc_tuned, "precision": a.precision},
        "dense_step_s": med["dense"],
        "moe_step_s": med["moe"],
        "ratio": med["moe"] / med["dense"],
        "dense_tokens_per_s": tokens / med["dense"],
        "moe_tokens_per_s": tokens / med["moe"],
        "goal_ratio": 1.15,
    }
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"dense {med['dense']:.3f}s/step, moe {med['moe']:.3f}s/step, ratio {out['ratio']:.3f} "
              f"(goal <= 1.15)", file=sys.stderr)


if __name__ == "__main__":
    main()
