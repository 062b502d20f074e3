"""Model-only checkpoints: `model.safetensors` plus a `model.json` sidecar.

The sidecar holds everything needed to rebuild the module tree before the
weights go in: the transformers `GPT2Config`, the attention implementation,
the MoE structure (layers, experts, top-k, noise, active masks) and whatever
the caller adds under `extra`. No pickle anywhere.

Experts are stored stacked (`...mlp.experts.w_fc` [E, d, h], ...); checkpoints
from before that, with one module per expert (`...mlp.experts.<e>.c_fc.weight`),
are stacked on load.

Tied weights: GPT-2's LM head is the token embedding. safetensors refuses
tensors that share storage, so only the first name of each shared tensor is
written; the sidecar lists the aliases and loading re-ties them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from moe_emergence.core.atomic import OutputError, _jsonable, atomic_path, write_text
from moe_emergence.model.gpt2 import moe_layers, to_moe
from moe_emergence.model.moe import STACKED
from moe_emergence.model.spec import ArchSpec, MoESpec

FORMAT = "moe_emergence.model/1"
WEIGHTS = "model.safetensors"
SIDECAR = "model.json"


class CheckpointError(ValueError):
    """A model checkpoint is missing, corrupt, or its sidecar disagrees with its weights."""


def _unwrap(model: nn.Module) -> GPT2LMHeadModel:
    while not isinstance(model, GPT2LMHeadModel) and hasattr(model, "module"):
        model = model.module
    if not isinstance(model, GPT2LMHeadModel):
        raise TypeError(f"save_model: expected a GPT2LMHeadModel, got {type(model).__name__}")
    return model


def moe_spec(model: nn.Module) -> dict[str, Any] | None:
    """The MoE structure of a model (None for a dense one), as stored in the sidecar."""
    layers = moe_layers(model)
    if not layers:
        return None
    _, first = layers[0]
    for i, layer in layers:
        for attr in ("n_experts", "n_primary", "top_k", "router_noise_std"):
            if getattr(layer, attr) != getattr(first, attr):
                raise ValueError(f"MoE layers differ in {attr} (layer {i}); the sidecar assumes one shape")
    return {
        "moe_layers": [i for i, _ in layers],
        "n_experts": first.n_primary,
        "ghost_experts": first.n_experts - first.n_primary,
        "top_k": first.top_k,
        "router_noise_std": first.router_noise_std,
        "active": {str(i): [bool(a) for a in layer.active.tolist()] for i, layer in layers},
    }


def save_model(model: nn.Module, directory: str | Path, extra: dict | None = None) -> Path:
    """Write `directory/model.safetensors` and `directory/model.json`; returns the directory."""
    model = _unwrap(model)
    directory = Path(directory)
    state = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in state.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().to("cpu").contiguous()
    sidecar = {
        "format": FORMAT,
        "gpt2_config": model.config.to_dict(),
        "attn_implementation": model.config._attn_implementation,
        "moe": moe_spec(model),
        "tied": tied,
        "tensors": {k: [str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in tensors.items()},
        "extra": extra or {},
    }
    # The weights carry a hash of their sidecar, so a pair from two different saves
    # (say, an interrupted overwrite) is caught on load.
    text = json.dumps(_jsonable(sidecar), indent=2, sort_keys=True) + "\n"
    # One key only: safetensors writes metadata in hash-map order, which varies between
    # processes, so two keys would give the same model different bytes (and DVC hashes).
    meta = {"sidecar_sha256": hashlib.sha256(text.encode()).hexdigest()}
    with atomic_path(directory / WEIGHTS) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except SafetensorError as e:  # a full disk surfaces here as a serialization error
            raise OutputError(f"cannot write {directory / WEIGHTS}: {e} (check free disk space)") from e
    write_text(directory / SIDECAR, text)
    if sidecar["moe"] is None:
        # A dense model is a plain GPT-2: with config.json next to the weights,
        # `GPT2LMHeadModel.from_pretrained(directory)` loads it (a compact vocabulary's
        # `kept_token_ids` rides along in the config). MoE models have none, so that
        # from_pretrained fails instead of silently dropping the experts.
        write_text(directory / "config.json", model.config.to_json_string())
    return directory


def _read_sidecar(path: Path) -> tuple[dict[str, Any], str]:
    if not path.is_file():
        raise CheckpointError(f"{path}: model sidecar not found (expected next to {WEIGHTS}; was save_model run?)")
    raw = path.read_bytes()
    try:
        side = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt model sidecar, not valid JSON ({e}); re-save the model") from None
    if not isinstance(side, dict) or side.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a model sidecar of format {FORMAT!r} (got {side.get('format') if isinstance(side, dict) else side!r})"
        )
    for key in ("gpt2_config", "moe", "tied"):
        if key not in side:
            raise CheckpointError(f"{path}: model sidecar lacks `{key}`")
    return side, hashlib.sha256(raw).hexdigest()


_PER_EXPERT = re.compile(r"(.*\.experts)\.(\d+)\.(c_(?:fc|proj)\.(?:weight|bias))")


def stack_experts(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-expert GPT-2 MLP tensors (the layout before stacking) stacked by expert number;
    a gap in the numbers shows up as a shape mismatch against the sidecar."""
    groups: dict[str, dict[int, torch.Tensor]] = {}
    for k in [k for k in tensors if _PER_EXPERT.fullmatch(k)]:
        prefix, e, param = _PER_EXPERT.fullmatch(k).groups()
        groups.setdefault(f"{prefix}.{STACKED[param]}", {})[int(e)] = tensors.pop(k)
    for name, per in groups.items():
        tensors[name] = torch.stack([per[e] for e in sorted(per)])
    return tensors


def _stage_of(directory: Path) -> str:
    """The pipeline stage that writes a model directory (models/base, models/<variant>/seed<k>)."""
    parts = directory.parts
    if "models" in parts[:-1]:
        rest = parts[parts.index("models") + 1 :]
        if rest == ("base",):
            return "base"
        if len(rest) == 2 and rest[1].startswith("seed"):
            return f"train_dense@{rest[1][4:]}" if rest[0] == "dense" else f"train@{rest[0]}-{rest[1][4:]}"
    return "<stage>"


def load_model(directory: str | Path) -> tuple[GPT2LMHeadModel, dict[str, Any]]:
    """Rebuild a model saved by `save_model`: (model in eval mode on CPU, sidecar dict).

    Raises CheckpointError for a missing or corrupt file, or a sidecar that does
    not match the weights (names, shapes, active masks).
    """
    directory = Path(directory)
    side, side_hash = _read_sidecar(directory / SIDECAR)
    wpath = directory / WEIGHTS
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: model weights not found")
    try:
        with safe_open(str(wpath), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{wpath}: corrupt or unreadable safetensors file ({e}); re-save the model") from None
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(
            f"{wpath}: non-finite values (NaN or inf) in {bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}: "
            f"the file is damaged (a corrupt DVC cache object?); re-create it with `dvc repro -s -f "
            f"{_stage_of(directory)}` or fetch it again with `dvc pull`"
        )
    tensors = stack_experts(tensors)
    want_hash = meta.get("sidecar_sha256")
    if want_hash is not None and want_hash != side_hash:
        raise CheckpointError(
            f"{directory}: sidecar and weights disagree: {SIDECAR} was not written together with "
            f"{WEIGHTS} (hash mismatch; an edited sidecar or a mix of two saves); re-save the model"
        )

    try:
        cfg = GPT2Config.from_dict(side["gpt2_config"])
    except Exception as e:
        raise CheckpointError(f"{directory / SIDECAR}: `gpt2_config` is not a valid GPT2Config ({e})") from None
    cfg._attn_implementation = side.get("attn_implementation") or "sdpa"
    model = GPT2LMHeadModel(cfg)
    spec = side["moe"]
    if spec is not None:
        moe = MoESpec(
            moe_layers=tuple(spec["moe_layers"]),
            n_experts=int(spec["n_experts"]),
            ghost_experts=int(spec["ghost_experts"]),
            top_k=int(spec["top_k"]),
            router_noise_std=float(spec["router_noise_std"]),
            upcycle_noise=0.0,  # weights come from the file
        )
        try:
            to_moe(model, moe, seed=0)
        except ValueError as e:
            raise CheckpointError(f"{directory / SIDECAR}: MoE structure does not fit the config: {e}") from None

    expected = model.state_dict()
    tied = side["tied"]
    want = {k for k in expected if k not in tied}
    missing, unexpected = sorted(want - set(tensors)), sorted(set(tensors) - want)
    if missing or unexpected:
        raise CheckpointError(
            f"{directory}: sidecar and weights disagree: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    for k in want:
        if tuple(expected[k].shape) != tuple(tensors[k].shape):
            raise CheckpointError(
                f"{directory}: tensor {k} has shape {tuple(tensors[k].shape)} in {WEIGHTS} but the "
                f"sidecar's model expects {tuple(expected[k].shape)}"
            )
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtype=dtypes.pop())
    result = model.load_state_dict(tensors, strict=False)
    if sorted(result.missing_keys) != sorted(tied):
        raise CheckpointError(f"{directory}: weights left unset after loading: {result.missing_keys[:5]}")
    for alias, source in tied.items():
        a, s = model.get_parameter(alias), model.get_parameter(source)
        if a is not s:
            raise CheckpointError(f"{directory}: {alias} should be tied to {source} but is not")
    if spec is not None:
        for i, layer in moe_layers(model):
            if [bool(a) for a in layer.active.tolist()] != spec["active"].get(str(i)):
                raise CheckpointError(f"{directory}: active experts of layer {i} differ between sidecar and weights")
    model.eval()
    return model, side


def check_sidecar(
    side: Mapping[str, Any], directory: Path, variant: str, stage: str,
    arch: ArchSpec | None, moe: MoESpec | None,
) -> None:
    """Raise CheckpointError when a checkpoint's sidecar disagrees with what params.yaml says
    it is: `arch` the shape of a scratch base (None: pretrained, not checked), `moe` the MoE
    structure (None: a dense variant)."""
    problems = []
    cfg = side.get("gpt2_config") or {}
    if arch is not None:
        for key in ("n_layer", "n_embd", "n_head", "n_positions"):
            want, got = getattr(arch, key), cfg.get(key)
            if got != want:
                problems.append(f"{key} is {got}, params.yaml model.arch.{key} is {want}")
    spec = side.get("moe")
    if moe is not None and spec is None:
        problems.append("it is a dense model, but the variant is a MoE variant")
    elif moe is None and spec is not None:
        problems.append("it has MoE layers, but the variant is dense")
    elif moe is not None:
        checks = (
            ("moe_layers", sorted(spec.get("moe_layers", [])), sorted(moe.moe_layers)),
            ("n_experts", spec.get("n_experts"), moe.n_experts),
            ("top_k", spec.get("top_k"), moe.top_k),
            ("ghost_experts", spec.get("ghost_experts"), moe.ghost_experts),
        )
        problems += [
            f"{k} is {got}, params.yaml says {want}" for k, got, want in checks if got != want
        ]
    saved_as = (side.get("extra") or {}).get("variant")
    if saved_as is not None and saved_as != variant:
        problems.append(f"it was saved as variant {saved_as!r}")
    if problems:
        raise CheckpointError(
            f"{directory / 'model.json'} does not match params.yaml for variant {variant!r}: "
            f"{'; '.join(problems)}. The model is stale: run `dvc repro {stage}`"
        )
