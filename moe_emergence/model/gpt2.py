"""GPT-2 from `transformers`, dense or with MoE MLPs in chosen layers.

Model surgery is one attribute assignment per block (`block.mlp = MoELayer`),
so attention, norms, residuals, masking and caching stay as the library has
them. The experts are stacked copies of the block's own `GPT2MLP` (Conv1D
weights stored [in, out], its activation and dropout), never a rebuilt MLP.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

from moe_emergence.core.hub import hub_unreachable
from moe_emergence.model.moe import GroupedExperts, MoELayer
from moe_emergence.model.router import RouterOutput
from moe_emergence.model.spec import ArchSpec, MoESpec

GPT2_VOCAB = 50257
# GPT-2's "gelu_new" is the tanh approximation of GELU written as five elementwise torch ops;
# "gelu_pytorch_tanh" is the same function in one fused kernel (max difference 2.4e-7 in fp32),
# 3.3x faster forward + backward on the CPU (BENCHMARKS.md). Pretrained GPT-2 loads with it too.
FAST_GELU = "gelu_pytorch_tanh"


def gpt2_config(
    arch: ArchSpec, vocab_size: int = GPT2_VOCAB, attn_implementation: str = "sdpa"
) -> GPT2Config:
    """GPT-2 config for a model trained from scratch: `arch.dropout` on residuals and embeddings,
    none in attention, tied embeddings."""
    eos = min(50256, vocab_size - 1)
    return GPT2Config(
        vocab_size=vocab_size,
        n_layer=arch.n_layer,
        n_embd=arch.n_embd,
        n_head=arch.n_head,
        n_positions=arch.n_positions,
        resid_pdrop=arch.dropout,
        embd_pdrop=arch.dropout,
        attn_pdrop=0.0,
        bos_token_id=eos,
        eos_token_id=eos,
        tie_word_embeddings=True,
        activation_function=FAST_GELU,
        attn_implementation=attn_implementation,
    )


def make_dense(
    arch: ArchSpec,
    vocab_size: int = GPT2_VOCAB,
    attn_implementation: str = "sdpa",
    seed: int | None = None,
) -> GPT2LMHeadModel:
    """A freshly initialized GPT-2 (GPT-2's init: N(0, 0.02), residual projections
    scaled by 1/sqrt(2 n_layer)) with tied embeddings.

    `seed` makes the init independent of the global RNG (which it leaves untouched);
    without it the global RNG is used.
    """
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {attn_implementation!r}")
    cfg = gpt2_config(arch, vocab_size, attn_implementation)
    if seed is None:
        return GPT2LMHeadModel(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(cfg)


def load_pretrained(
    name_or_path: str, attn_implementation: str = "sdpa", dropout: float | None = None
) -> GPT2LMHeadModel:
    """A pretrained GPT-2 from a local directory or the Hugging Face hub (cache first).

    Only GPT-2 architectures load, and never with remote code. `dropout`, when
    given, overrides the checkpoint's residual, embedding and attention dropout
    (GPT-2's own config says 0.1). Raises RuntimeError when the model cannot be
    had, e.g. offline with an empty cache, naming the CPU profile's way out.
    """
    kwargs: dict = {"attn_implementation": attn_implementation, "trust_remote_code": False,
                    "activation_function": FAST_GELU}
    if dropout is not None:
        kwargs.update(resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    looks_local = os.sep in name_or_path or name_or_path.startswith(".") or Path(name_or_path).exists()
    if looks_local and not Path(name_or_path).is_dir():
        raise RuntimeError(
            f"model.init: {name_or_path!r} looks like a local path but is not a directory with a "
            "pretrained GPT-2 (config.json + weights); fix the path, use a hub name such as "
            "'gpt2', or set `model.init: scratch` to train a small base from scratch"
        )
    errors = []
    model = None
    for local_only in (True, False):  # the local cache first: no network needed when present
        if not local_only:
            if looks_local:
                break
            reason = hub_unreachable()
            if reason:  # fail now rather than after the hub client's retries
                errors.append(reason)
                break
        try:
            model = GPT2LMHeadModel.from_pretrained(name_or_path, local_files_only=local_only, **kwargs)
            break
        except Exception as e:  # OSError, connection and hub errors all mean "not loadable"
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if model is None and looks_local:
        raise RuntimeError(
            f"model.init: could not load a pretrained GPT-2 from the directory {name_or_path!r} "
            f"({' | '.join(errors)}); fix the directory, or set `model.init: scratch` to train "
            "a small base from scratch"
        )
    if model is None:
        raise RuntimeError(
            f"could not load the pretrained model {name_or_path!r}: not in the local cache and it "
            "could not be loaded offline or from the hub (no network?). Download it where there "
            "is network (the `gpt2` profile needs it), or use the CPU profile, which trains its "
            f"base from scratch: `model.init: scratch`. Details: {' | '.join(errors)}"
        )
    if not isinstance(model, GPT2LMHeadModel) or model.config.model_type != "gpt2":
        raise RuntimeError(f"model.init: {name_or_path!r} is not a GPT-2 checkpoint")
    return model


def _perturb_(experts: GroupedExperts, rel_std: float, gen: torch.Generator) -> None:
    """Add N(0, 1) * std(param) * rel_std to every expert's every parameter (std elementwise)."""
    with torch.no_grad():
        for p in experts.parameters():
            for e in range(p.shape[0]):
                std = p[e].float().std().item() if p[e].numel() > 1 else 0.0
                if std > 0 and rel_std > 0 and math.isfinite(std):
                    noise = torch.randn(p.shape[1:], generator=gen) * (std * rel_std)
                    p[e].add_(noise.to(p.device, p.dtype))


def _init_scratch_(experts: GroupedExperts, initializer_range: float, n_layer: int, gen: torch.Generator) -> None:
    """GPT-2's init of an MLP, per expert: N(0, 0.02), c_proj scaled by 1/sqrt(2 n_layer), zero bias."""
    with torch.no_grad():
        for w, std in ((experts.w_fc, initializer_range), (experts.w_proj, initializer_range / math.sqrt(2 * n_layer))):
            w.copy_((torch.randn(w.shape, generator=gen) * std).to(w.device, w.dtype))
        experts.b_fc.zero_()
        experts.b_proj.zero_()


@torch.no_grad()
def mlp_inputs(model: GPT2LMHeadModel, ids: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    """What the MLP of each of `layers` sees (its `ln_2` output) on [B, T] model ids: {layer: [B*T, d]}."""
    out: dict[int, torch.Tensor] = {}
    hooks = [
        model.transformer.h[i].ln_2.register_forward_hook(
            lambda _m, _inp, y, i=i: out.__setitem__(i, y.detach().reshape(-1, y.shape[-1]).float().cpu())
        )
        for i in layers
    ]
    was_training = model.training
    model.eval()
    try:
        model.transformer(input_ids=ids.to(next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return out


def to_moe(
    dense: GPT2LMHeadModel, spec: MoESpec, seed: int, calibration: torch.Tensor | None = None
) -> GPT2LMHeadModel:
    """Swap `block.mlp` of the blocks in `spec.moe_layers` for MoE layers, IN PLACE.

    The dense model is modified and returned (deep-copy it first to keep it).
    Each layer gets `spec.n_experts + spec.ghost_experts` experts:
    - moe_init "upcycle": each a copy of the block's MLP plus N(0,1) *
      `spec.upcycle_noise` * std(param) per parameter (0 gives exact copies, and
      logits equal to the dense model's);
    - moe_init "scratch": each freshly initialized with GPT-2's init.
    The router is N(0, initializer_range); with `spec.router_init` "centered" it is
    then made blind to the hidden states' common component (`Router.center_`),
    measured on `calibration`, [B, T] model ids of train blocks (required then).
    All randomness comes from `seed`.
    """
    blocks = dense.transformer.h
    n_layer = len(blocks)
    for i in spec.moe_layers:
        if not 0 <= i < n_layer:
            raise ValueError(
                f"model.moe_layers: layer {i} does not exist; the model has layers 0..{n_layer - 1}"
            )
        if not isinstance(blocks[i].mlp, GPT2MLP):
            raise ValueError(f"model.moe_layers: layer {i} has no dense GPT2MLP to replace (already MoE?)")
    if not 1 <= spec.top_k <= spec.n_experts:
        raise ValueError(f"model.top_k must be in 1..model.n_experts ({spec.n_experts}), got {spec.top_k}")
    centered = spec.router_init == "centered"
    if centered and calibration is None:
        raise ValueError("model.router_init 'centered' needs calibration ids (train blocks) to measure on")
    # The dense model's MLP inputs: an upcycled MoE sees the same ones up to the upcycling noise.
    hidden = mlp_inputs(dense, calibration, sorted(spec.moe_layers)) if centered else {}
    gen = torch.Generator().manual_seed(seed)
    cfg = dense.config
    n_total = spec.n_experts + spec.ghost_experts
    for i in sorted(spec.moe_layers):
        block = blocks[i]
        mlp = block.mlp
        experts = GroupedExperts.from_mlp(mlp, n_total)
        if spec.moe_init == "scratch":
            _init_scratch_(experts, cfg.initializer_range, cfg.n_layer, gen)
        else:
            _perturb_(experts, spec.upcycle_noise, gen)
        layer = MoELayer(
            experts,
            cfg.n_embd,
            top_k=spec.top_k,
            router_noise_std=spec.router_noise_std,
            n_primary=spec.n_experts,
        )
        layer.router.reset_parameters(std=cfg.initializer_range, generator=gen)
        if centered:
            layer.router.center_(hidden[i])
        layer.to(mlp.c_fc.weight)
        layer.train(mlp.training)
        block.mlp = layer
    return dense


def moe_layers(model: nn.Module) -> list[tuple[int, MoELayer]]:
    """(layer index, MoE layer) for every transformer layer whose MLP is a MoE layer, in order."""
    # Unwrap DistributedDataParallel (.module) and torch.compile (._orig_mod).
    while not hasattr(model, "transformer") and (
        hasattr(model, "module") or hasattr(model, "_orig_mod")
    ):
        model = getattr(model, "module", None) or model._orig_mod
    inner = getattr(model, "transformer", model)
    blocks = getattr(inner, "h", None)
    if blocks is None:
        raise TypeError(f"moe_layers: expected a GPT-2 model, got {type(model).__name__}")
    return [(i, b.mlp) for i, b in enumerate(blocks) if isinstance(b.mlp, MoELayer)]


def latest_routing(model: nn.Module) -> dict[int, RouterOutput]:
    """Block index -> the router output of that MoE layer's latest forward (`MoELayer.routing`)."""
    out = {}
    for i, layer in moe_layers(model):
        if layer.routing is None:
            raise RuntimeError(f"MoE layer in layer {i} has not run a forward yet")
        out[i] = layer.routing
    return out
