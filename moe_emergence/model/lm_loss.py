"""Next-token cross-entropy computed from hidden states, a chunk of tokens at a time.

The plain route (`logits = h @ W.T`, then cross-entropy) materializes the whole
[tokens, vocab] logit matrix, its log-softmax and its gradient: at the CPU
profile's 2,048 tokens x 50,257 ids that is three 412 MB fp32 tensors per step,
streamed through memory several times, and the softmax part of the step costs
nearly as much as the LM-head matmul itself. Here the logits of `chunk_tokens`
rows at a time are computed, reduced to their losses and, when gradients are
needed, turned straight into the gradients of the hidden states and of the
weight (the "fused linear cross-entropy" of Liger-Kernel and Cut Cross-Entropy,
written in plain PyTorch so that it runs on CPU). The gradient is exact: it is
the same `softmax - onehot` the autograd route computes, applied chunk by chunk.

Conventions (the reference is `sequence_lm_loss`, from full logits): position
t predicts token t + 1, the last
position of every block has no target, and a block's loss is the mean over its
T - 1 targets. The differentiable output is the mean of the per-block losses
(what the trainer minimizes); the per-block losses come back detached, for
logging and evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Rows of logits per chunk: about 8M logits (32 MB in fp32) per chunk, within [256, 2048]
# rows with gradients and [64, 2048] without. A chunk must be large enough to amortize the
# weight-gradient update and small enough to stay in cache (BENCHMARKS.md, LM head).
CHUNK_LOGITS = 1 << 23
DEFAULT_CHUNK_TOKENS = 256  # what the rule gives for GPT-2's 50,257 ids, with gradients


def chunk_rows(vocab: int, grad: bool) -> int:
    return max(256 if grad else 64, min(2048, CHUNK_LOGITS // max(vocab, 1)))


def shifted_targets(ids: Tensor) -> Tensor:
    """[B, T] ids -> [B * T] targets; the last position of each block is ignored (-100)."""
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:]
    return targets.reshape(-1)


def _upcast(logits: Tensor) -> Tensor:
    """The softmax is never computed below fp32."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _chunk_logits(h: Tensor, weight: Tensor) -> Tensor:
    return _upcast(h @ weight.t())  # under CUDA autocast the matmul runs in bf16


def sequence_lm_loss(logits: Tensor, ids: Tensor) -> Tensor:
    """Reference definition from full logits: [B, T, V] logits, [B, T] ids -> [B] losses."""
    b, t, v = logits.shape
    ce = F.cross_entropy(_upcast(logits.reshape(-1, v)), shifted_targets(ids), reduction="none")
    return ce.view(b, t).sum(dim=1) / (t - 1)


def _exp_and_losses_(logits: Tensor, y: Tensor):
    """Per-token cross-entropy from one exp pass; the logits buffer becomes exp(logits - max).

    Returns that buffer, its row sums (so that buffer / sums is the softmax, and
    softmax - onehot is d(CE)/d(logits)), the losses (0 where the target is ignored),
    the valid mask and the targets with ignored ones replaced by 0."""
    valid = y >= 0
    safe = y.clamp_min(0)
    picked = logits.gather(1, safe[:, None]).squeeze(1)
    top = logits.amax(dim=-1, keepdim=True)
    e = logits.sub_(top).exp_()
    total = e.sum(dim=-1, keepdim=True)
    lse = (total.log() + top).squeeze(1)
    return e, total, torch.where(valid, lse - picked, 0.0), valid, safe


class _FusedLinearCE(torch.autograd.Function):
    """sum_t scale * CE(h_t @ W.T, y_t) with gradients computed during the forward pass."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, scale: float, chunk: int):
        n = hidden.shape[0]
        acc = torch.promote_types(weight.dtype, torch.float32)
        per_token = torch.zeros(n, dtype=acc, device=hidden.device)
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        for s in range(0, n, chunk):
            h, y = hidden[s : s + chunk], targets[s : s + chunk]
            logits = _chunk_logits(h, weight)
            g, total, per_token[s : s + chunk], valid, safe = _exp_and_losses_(logits, y)
            g.mul_((valid.to(g.dtype) * scale)[:, None] / total)
            g[torch.arange(len(y), device=g.device), safe] -= valid.to(g.dtype) * scale  # ignored rows stay 0
            g = g.to(acc)
            grad_h[s : s + chunk] = (g @ weight).to(grad_h.dtype)  # bf16 under CUDA autocast
            grad_w.addmm_(g.t(), h.to(acc))  # in place: fp32 accumulation even under autocast
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        loss = per_token.sum() * scale
        ctx.mark_non_differentiable(per_token)
        return loss, per_token

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_per_token: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_loss.to(grad_h.dtype), grad_w * grad_loss.to(grad_w.dtype), None, None, None


@torch.no_grad()
def token_losses(hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int | None = None) -> Tensor:
    """Cross-entropy of each row of `hidden` [N, d] against `targets` [N] (-100: ignored, loss 0)."""
    chunk = chunk or chunk_rows(weight.shape[0], grad=False)
    out = torch.empty(hidden.shape[0], dtype=torch.promote_types(weight.dtype, torch.float32), device=hidden.device)
    for s in range(0, hidden.shape[0], chunk):
        out[s : s + chunk] = _exp_and_losses_(_chunk_logits(hidden[s : s + chunk], weight), targets[s : s + chunk])[2]
    return out


def lm_loss_from_hidden(hidden: Tensor, weight: Tensor, ids: Tensor,
                        chunk_tokens: int | None = None) -> tuple[Tensor, Tensor]:
    """Mean per-block next-token loss and the per-block losses ([B], detached).

    `hidden` is the final hidden state [B, T, d] (after the last layer norm),
    `weight` the LM head [V, d] (GPT-2 ties it to the token embedding), `ids`
    the [B, T] input tokens. Only the first output carries a gradient.
    """
    b, t, d = hidden.shape
    if t < 2:
        raise ValueError(f"a block needs at least 2 tokens to have a next-token target, got {t}")
    if chunk_tokens is not None and chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    flat = hidden.reshape(b * t, d)
    targets = shifted_targets(ids)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        chunk = chunk_tokens or chunk_rows(weight.shape[0], grad=True)
        loss, per_token = _FusedLinearCE.apply(flat, weight, targets, 1.0 / (b * (t - 1)), chunk)
    else:
        per_token = token_losses(flat, weight, targets, chunk_tokens)
        loss = per_token.sum() / (b * (t - 1))
    per_seq = per_token.detach().view(b, t).sum(dim=1) / (t - 1)
    return loss, per_seq


class CausalLMLoss(torch.nn.Module):
    """Wraps a GPT-2 LM so that its forward returns (mean LM loss, per-block losses)
    without materializing the full logits. Wrap this, not the bare model, in DDP."""

    def __init__(self, model: torch.nn.Module, chunk_tokens: int | None = None):
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens

    def forward(self, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.model.transformer(input_ids=input_ids).last_hidden_state
        return lm_loss_from_hidden(hidden, self.model.lm_head.weight, input_ids, self.chunk_tokens)


@torch.no_grad()
def model_sequence_losses(model: torch.nn.Module, ids: Tensor, chunk_tokens: int | None = None) -> Tensor:
    """Per-block next-token losses [B] of a GPT-2 LM on [B, T] ids, without full logits."""
    hidden = model.transformer(input_ids=ids).last_hidden_state
    return lm_loss_from_hidden(hidden, model.lm_head.weight, ids, chunk_tokens)[1]
