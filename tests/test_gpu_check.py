"""The GPU check runs everything but its CUDA parts on the CPU (tiny shapes), so the script
that a GPU box will run has been run before: its JSON has every section and sane numbers."""

from __future__ import annotations

import json

import torch

from bench import gpu_check


def test_gpu_check_smoke_on_cpu(capsys):
    out = gpu_check.main(["--smoke", "--skip-repro"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(out))
    if not torch.cuda.is_available():
        assert out["device"] == "cpu" and out["grouped_vs_loop"]["status"].startswith("skipped")
    for n in ("256", "1024"):
        assert out["layer"][n]["ratio"] > 0 and out["layer"][n]["dense_ms"] > 0
    ts = out["train_step"]
    assert ts["dense_tokens_per_s"] > 0 and ts["moe_tokens_per_s"] > 0
    assert set(out["met"]) == {"layer_ratio", "train_tokens_per_s_ratio"}
