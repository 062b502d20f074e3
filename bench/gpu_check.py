"""The GPU check: everything a GPT-2-small run depends on, measured on one GPU in minutes.

1. grouped_mm against the loop backend (forward and gradients, bf16): the same numbers?
2. MoE layer / dense MLP (hidden 4d) at GPT-2 small shapes (bf16, top-1; goal <= 1.10x at 4,096 tokens)
3. MoE / dense train step tokens per second at GPT-2 small (the trainer's own step; goal
   >= 0.85x), with peak GPU memory
4. a 20-step `dvc repro` of `profiles/gpt2.yaml` with local stand-ins (bench/standin.py)

Prints progress on stderr and one JSON object on stdout. Without CUDA the CUDA parts say
"skipped" and the rest runs on the CPU; `--smoke` shrinks every shape (what the tests run).

    bash bench/gpu_check.sh            # or: python bench/gpu_check.py [--smoke] [--skip-repro]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from moe_emergence.core.config import ModelParams, TrainParams
from moe_emergence.model.gpt2 import make_dense, moe_layers, to_moe
from moe_emergence.model.spec import ArchSpec, MoESpec
from moe_emergence.training.trainer import PackedSplit, RunSpec, Trainer

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"layer_ratio_4096": 1.10, "train_tokens_per_s_ratio": 0.85}


def log(msg: str) -> None:
    print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_moe_layer(d: int, experts: int, device: torch.device):
    """GPT-2's MLP at width d (hidden 4d), and the MoE layer upcycled from it (top-1)."""
    dense = make_dense(ArchSpec(n_layer=1, n_embd=d, n_head=max(1, d // 64), n_positions=64), vocab_size=256, seed=0)
    mlp = copy.deepcopy(dense.transformer.h[0].mlp)
    moe = to_moe(dense, MoESpec(moe_layers=(0,), n_experts=experts, top_k=1, upcycle_noise=1e-2), seed=0)
    return mlp.to(device), moe_layers(moe)[0][1].to(device)


def parity(d: int, experts: int, tokens: int, device: torch.device) -> dict:
    """grouped_mm vs the loop backend on the same layer and tokens, bf16 autocast."""
    if device.type != "cuda":
        return {"status": "skipped: no CUDA"}
    _, layer = one_moe_layer(d, experts, device)
    x0 = torch.randn(tokens, d, device=device)
    out, grads = {}, {}
    for path in ("loop", "grouped"):
        layer.backend = path
        layer.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = layer(x)
            y.float().square().mean().backward()
        except Exception as e:  # the kernel refused: that is the finding
            return {"status": f"grouped_mm failed: {type(e).__name__}: {e}"[:300]}
        out[path] = y.float()
        grads[path] = [x.grad.float()] + [p.grad.float() for p in layer.experts.parameters()]
    layer.backend = "auto"

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm().clamp_min(1e-12))

    g = max(rel(a, b) for a, b in zip(grads["grouped"], grads["loop"], strict=True))
    f = rel(out["grouped"], out["loop"])
    return {"status": "ok" if max(f, g) < 2e-2 else "MISMATCH", "forward_rel_err": f, "grad_rel_err_max": g}


def time_layers(d: int, experts: int, token_counts: list[int], device: torch.device, rounds: int) -> dict:
    """Forward+backward of the MoE layer and the dense MLP, interleaved rounds, medians."""
    dense, moe = one_moe_layer(d, experts, device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out = {}
    for n in token_counts:
        x = torch.randn(n, d, device=device)
        times: dict[str, list[float]] = {"dense": [], "moe": []}
        for i in range(rounds + 2):
            for name, mod in (("dense", dense), ("moe", moe)):
                xi = x.clone().requires_grad_(True)
                sync(device)
                t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
                    y = mod(xi)
                y.float().square().mean().backward()
                sync(device)
                if i >= 2:
                    times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[str(n)] = {"dense_ms": 1e3 * med["dense"], "moe_ms": 1e3 * med["moe"],
                       "ratio": med["moe"] / med["dense"]}
    return out


def time_train_steps(arch: ArchSpec, moe_layers_at: tuple[int, ...], batch: int, steps: int,
                     device: torch.device, vocab: int) -> dict:
    """The trainer's own optimizer step, dense vs MoE (upcycled from the same weights)."""
    precision = "bf16" if device.type == "cuda" else "fp32"
    tp = TrainParams(max_steps=steps + 3, batch_size=batch, device=device.type, precision=precision,
                     log_every=10**6, eval_every=10**6, snapshot_every=10**6, resume_every=10**6)
    mp = ModelParams(init="gpt2", moe_layers=list(moe_layers_at), n_experts=8, top_k=1)
    rng = np.random.default_rng(0)
    n_blocks = batch * (steps + 3)
    ids = rng.integers(0, vocab, size=(n_blocks, arch.n_positions)).astype(np.uint16)
    data = PackedSplit(ids=ids, domain_codes=np.arange(n_blocks) % 3, domain_names=["code", "math", "prose"])
    base = make_dense(arch, vocab_size=vocab, seed=0)
    dense = copy.deepcopy(base)
    moe = to_moe(base, MoESpec.from_params(mp), seed=0)
    res: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, spec_model in (("dense", dense, None), ("moe", moe, mp)):
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            spec = RunSpec(name=name, train=tp, model=spec_model, model_out=Path(tmp) / name,
                           report_out=Path(tmp) / f"r_{name}", work_dir=Path(tmp) / f"w_{name}")
            t = Trainer(spec, model, data, data)
            times = []
            for i in range(steps + 2):
                sync(device)
                t0 = time.perf_counter()
                t.train_step()
                sync(device)
                if i >= 2:
                    times.append(time.perf_counter() - t0)
            res[f"{name}_step_s"] = statistics.median(times)
            res[f"{name}_tokens_per_s"] = batch * arch.n_positions / res[f"{name}_step_s"]
            if device.type == "cuda":
                res[f"{name}_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
            del t, model
    res["tokens_per_s_ratio"] = res["moe_tokens_per_s"] / res["dense_tokens_per_s"]
    return res


def standin_repro(steps: int, smoke: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, str(ROOT / "bench/standin.py"), str(Path(tmp) / "repo"), "--steps", str(steps), "--run"]
        if smoke:
            args += ["--width", "64", "--heads", "4", "--block", "64", "--size-mb", "0.1"]
        r = subprocess.run(args, capture_output=True, text=True)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return {"repro_ok": False, "error_tail": (r.stdout + r.stderr)[-2000:]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, a few rounds (CPU tests)")
    parser.add_argument("--skip-repro", action="store_true", help="leave out the stand-in `dvc repro`")
    parser.add_argument("--repro-steps", type=int, default=20)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t_start = time.perf_counter()
    if args.smoke:
        d, tokens, rounds = 64, [256, 1024], 3
        arch, batch, steps, vocab = ArchSpec(n_layer=4, n_embd=64, n_head=4, n_positions=64), 4, 3, 512
        layers_at = (2, 3)
    else:
        d, tokens, rounds = 768, [4096, 16384], 9
        arch, batch, steps, vocab = ArchSpec(n_layer=12, n_embd=768, n_head=12, n_positions=512), 8, 10, 50257
        layers_at = (8, 9, 10, 11)
    out: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                 "torch": torch.__version__, "cuda": torch.version.cuda, "smoke": args.smoke, "goals": GOALS}
    log(f"device {out['device']}; 1/4 grouped_mm vs loop")
    out["grouped_vs_loop"] = parity(d, 8, tokens[0], device)
    log("2/4 MoE layer vs dense MLP")
    out["layer"] = time_layers(d, 8, tokens, device, rounds)
    log(f"3/4 train step, {arch.n_layer} layers x {arch.n_embd}, batch {batch} x {arch.n_positions}")
    out["train_step"] = time_train_steps(arch, layers_at, batch, steps, device, vocab)
    if not args.skip_repro:
        log(f"4/4 `dvc repro` of the GPT-2 profile with local stand-ins, {args.repro_steps} steps")
        out["standin_repro"] = standin_repro(args.repro_steps, args.smoke)
    first = out["layer"][str(tokens[0])]["ratio"]
    out["met"] = {"layer_ratio": first <= GOALS["layer_ratio_4096"],
                  "train_tokens_per_s_ratio": out["train_step"]["tokens_per_s_ratio"] >= GOALS["train_tokens_per_s_ratio"]}
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
