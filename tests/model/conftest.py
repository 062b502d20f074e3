"""Tiny GPT-2 MoE models for the model tests (CPU, a fraction of a second each)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from moe_emergence.model.gpt2 import make_dense
from moe_emergence.model.spec import ArchSpec, MoESpec

ARCH = ArchSpec(n_layer=2, n_embd=32, n_head=4, n_positions=32)
VOCAB = 97


def tiny_params(**overrides) -> MoESpec:
    base = MoESpec(moe_layers=(0, 1), n_experts=4, top_k=1, router_noise_std=0.0, upcycle_noise=0.0)
    return replace(base, **overrides)


@pytest.fixture
def mp_factory():
    return tiny_params


@pytest.fixture
def dense():
    return make_dense(ARCH, vocab_size=VOCAB, seed=0)


@pytest.fixture
def tokens():
    return torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(1))
