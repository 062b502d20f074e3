"""The router: a token's MLP input to its experts, returning what the losses need.

Like Mixtral's gate it returns the raw logits (the z-loss reads them) next to
the selection; unlike it, the selection probabilities may carry exploration
noise, so both are returned and kept apart:

- `logits` [N, E] fp32, pre-noise, dormant (ghost) experts at -inf: z-loss,
  router entropy (logs and analysis read softmax(logits), so "router
  confidence" never moves with the noise schedule);
- `probs` [N, E] fp32, softmax after noise: the experts used are their top-k,
  so the load-balancing P reads them too.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class RouterOutput(NamedTuple):
    """One forward's routing of N = B*T tokens over E experts."""

    logits: Tensor  # [N, E] fp32, no noise, dormant experts -inf
    probs: Tensor  # [N, E] fp32 softmax after noise (== softmax(logits) without noise)
    expert_idx: Tensor  # [N, k] long, the experts each token is sent to
    gate: Tensor  # [N, k] weights of the expert outputs
    counts: Tensor  # [E] long, assignments per expert (sums to N*k)


def count_assignments(expert_idx: Tensor, n_experts: int) -> Tensor:
    """Hard counts per expert of the [N, k] assignments, a long tensor [E].

    On CUDA `bincount` reads the maximum back to the host; a scatter-add does not.
    """
    flat = expert_idx.reshape(-1)
    if flat.is_cuda:
        counts = torch.zeros(n_experts, dtype=torch.long, device=flat.device)
        return counts.scatter_add_(0, flat, torch.ones_like(flat))
    return torch.bincount(flat, minlength=n_experts)


def router_entropy(logits: Tensor) -> Tensor:
    """Per-token entropy (nats) of softmax(logits) [N, E] -> [N]; -inf logits count as p = 0."""
    return torch.special.entr(logits.float().softmax(-1)).sum(-1)


class Router(nn.Module):
    """Linear map d -> E without bias, always computed in fp32 (also under autocast)."""

    def __init__(self, d_model: int, n_experts: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, d_model))
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02, generator: torch.Generator | None = None) -> None:
        # GPT-2's initializer_range: logits start near zero, so routing starts near uniform.
        with torch.no_grad():
            w = torch.randn(self.weight.shape, generator=generator) * std
            self.weight.copy_(w.to(self.weight.device, self.weight.dtype))

    def center_(self, hidden: Tensor) -> None:
        """Make the weights blind to the common component of `hidden` [N, d] (`ln_2` outputs).

        GPT-2's hidden states share a large mean vector, so with random rows every token
        gets the same offset w_e . mean on expert e, and that offset, not the token, picks
        the winner (CPU base: offsets of -0.16..+0.25 against a token spread of ~0.2; two
        of eight experts got no token). Each row loses its component along the mean, then
        is rescaled to the random rows' average token spread: the init scale stays, and
        no expert starts ahead of the others.
        """
        with torch.no_grad():
            h = hidden.reshape(-1, hidden.shape[-1]).float()
            w = self.weight.float()
            mu = h.mean(0)
            centered_h = h - mu
            before = (centered_h @ w.t()).std(0)  # [E] token-specific spread of each row
            u = mu / mu.norm().clamp_min(1e-12)
            w = w - torch.outer(w @ u, u)
            after = (centered_h @ w.t()).std(0).clamp_min(1e-12)
            w = w * (before.mean() / after)[:, None]
            self.weight.copy_(w.to(self.weight.dtype))

    def forward(
        self, x: Tensor, top_k: int, noise_std: float = 0.0, active: Tensor | None = None
    ) -> RouterOutput:
        """Route x [N, d]. `noise_std` > 0 adds Gaussian noise to the logits used for
        selection; `active` [E] bool masks dormant experts out of routing."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = nn.functional.linear(x.float(), self.weight.float())  # [N, E]
            if active is not None:
                logits = logits.masked_fill(~active, float("-inf"))
            if noise_std > 0:
                logits_sel = logits + torch.randn_like(logits) * noise_std
            else:
                logits_sel = logits
            probs = logits_sel.softmax(-1)
            top_p, expert_idx = probs.topk(top_k, dim=-1)  # [N, k]
            if top_k > 1:
                gate = top_p / top_p.sum(-1, keepdim=True)
            elif self.training:
                # Straight-through: forward exactly 1 (an upcycled expert reproduces the
                # dense MLP), gradient as if the weight were p. Renormalizing a single
                # weight would give a constant 1 and starve the router.
                gate = 1.0 + (top_p - top_p.detach())  # parenthesized: (1 + p) - p rounds
            else:
                gate = torch.ones_like(top_p)
        return RouterOutput(logits, probs, expert_idx, gate, count_assignments(expert_idx, logits.shape[-1]))
