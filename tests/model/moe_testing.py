"""Shared builders for the model tests (not a test module)."""

from __future__ import annotations

import torch
from transformers import GPT2Config
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

from moe_emergence.model.moe import GroupedExperts, MoELayer


def make_layer(n_experts=4, top_k=1, noise=0.0, d=16, n_primary=None, seed=0) -> MoELayer:
    torch.manual_seed(seed)
    base = GPT2MLP(4 * d, GPT2Config(n_embd=d, resid_pdrop=0.0))
    experts = GroupedExperts.from_mlp(base, n_experts)
    with torch.no_grad():
        for p in experts.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    layer = MoELayer(experts, d, top_k=top_k, router_noise_std=noise, n_primary=n_primary)
    layer.router.reset_parameters(std=0.5)
    return layer
