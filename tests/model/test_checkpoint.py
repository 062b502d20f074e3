"""Model-only checkpoints: exact round trip, tied embeddings, clear errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from moe_emergence.model.checkpoint import SIDECAR, WEIGHTS, CheckpointError, load_model, save_model
from moe_emergence.model.ghost import GhostController
from moe_emergence.model.gpt2 import moe_layers, to_moe


def test_dense_round_trip(dense, tokens, tmp_path):
    save_model(dense, tmp_path / "m", {"step": 7})
    model, side = load_model(tmp_path / "m")
    dense.eval()
    assert torch.equal(model(tokens).logits, dense(tokens).logits)
    assert side["extra"] == {"step": 7} and side["moe"] is None
    assert model.lm_head.weight is model.transformer.wte.weight
    assert "lm_head.weight" not in load_file(str(tmp_path / "m" / WEIGHTS))


def test_a_dense_model_loads_with_transformers_and_a_moe_model_does_not(dense, mp_factory, tokens, tmp_path):
    from transformers import GPT2LMHeadModel

    save_model(dense, tmp_path / "dense")
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "dense").eval()
    assert torch.equal(hf(tokens).logits, dense.eval()(tokens).logits)
    save_model(to_moe(copy.deepcopy(dense), mp_factory(), seed=0), tmp_path / "moe")
    assert not (tmp_path / "moe" / "config.json").exists()  # from_pretrained fails rather than drop the experts
    with pytest.raises((OSError, RuntimeError)):  # no config: transformers' default GPT-2 does not fit
        GPT2LMHeadModel.from_pretrained(tmp_path / "moe")


def test_non_finite_weights_name_the_file_and_the_fix(dense, tmp_path):
    """64 bad bytes in a cache object became NaN in wte.weight; loading must say so, not analyse NaN."""
    where = tmp_path / "models" / "moe" / "seed1"
    save_model(dense, where)
    tensors = load_file(str(where / WEIGHTS))
    tensors["transformer.wte.weight"][3, :8] = float("nan")
    meta = {"sidecar_sha256": __import__("safetensors").safe_open(str(where / WEIGHTS), "pt").metadata()["sidecar_sha256"]}
    save_file(tensors, str(where / WEIGHTS), metadata=meta)
    with pytest.raises(CheckpointError, match=r"non-finite.*wte\.weight.*dvc repro -s -f train@moe-1.*dvc pull"):
        load_model(where)


def test_moe_round_trip_with_woken_ghost(dense, mp_factory, tokens, tmp_path):
    mp = mp_factory(ghost_experts=1, top_k=2, upcycle_noise=1e-2, router_noise_std=0.3)
    model = to_moe(copy.deepcopy(dense), mp, seed=1)
    GhostController(model, 0.5, 1).wake(3, 1, relieved=0)
    save_model(model, tmp_path / "m")
    loaded, side = load_model(tmp_path / "m")
    model.eval()
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)
    assert side["moe"]["active"] == {"0": [True] * 4 + [False], "1": [True] * 5}
    for (i, a), (j, b) in zip(moe_layers(loaded), moe_layers(model), strict=True):
        assert i == j and a.top_k == 2 and a.router_noise_std == 0.3
        assert torch.equal(a.active, b.active)


def test_missing_and_corrupt_files(dense, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nothing")
    save_model(dense, tmp_path / "m")
    (tmp_path / "m" / WEIGHTS).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "m")
    save_model(dense, tmp_path / "m")
    (tmp_path / "m" / SIDECAR).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path / "m")


def test_sidecar_that_does_not_match_weights(dense, mp_factory, tmp_path):
    model = to_moe(copy.deepcopy(dense), mp_factory(), seed=0)
    save_model(model, tmp_path / "m")
    side_path = tmp_path / "m" / SIDECAR
    side = json.loads(side_path.read_text())
    side["moe"]["n_experts"] = 3
    side["moe"]["active"] = {k: v[:3] for k, v in side["moe"]["active"].items()}
    side_path.write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="disagree"):
        load_model(tmp_path / "m")
    side["moe"] = None  # a dense sidecar over MoE weights
    side_path.write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="disagree"):
        load_model(tmp_path / "m")
    side = json.loads(side_path.read_text())
    side["gpt2_config"]["n_embd"] = 64
    side["moe"] = None
    side_path.write_text(json.dumps(side))
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "m")


def test_weights_from_another_save_are_caught(dense, mp_factory, tmp_path):
    save_model(dense, tmp_path / "a", {"step": 1})
    save_model(dense, tmp_path / "b", {"step": 2})
    (tmp_path / "b" / WEIGHTS).write_bytes((tmp_path / "a" / WEIGHTS).read_bytes())
    with pytest.raises(CheckpointError, match="hash mismatch"):
        load_model(tmp_path / "b")


def test_structure_checked_without_hash(dense, mp_factory, tmp_path):
    """Weights written by other tools carry no sidecar hash: names and shapes still checked."""
    model = to_moe(copy.deepcopy(dense), mp_factory(), seed=0)
    save_model(model, tmp_path / "m")
    tensors = load_file(str(tmp_path / "m" / WEIGHTS))
    save_file(tensors, str(tmp_path / "m" / WEIGHTS))  # no metadata
    load_model(tmp_path / "m")  # still loads
    side_path = tmp_path / "m" / SIDECAR
    side = json.loads(side_path.read_text())
    side["gpt2_config"]["n_positions"] = 64
    side_path.write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="shape"):
        load_model(tmp_path / "m")


def test_experts_are_saved_stacked(dense, mp_factory, tmp_path):
    model = to_moe(copy.deepcopy(dense), mp_factory(), seed=0)
    save_model(model, tmp_path / "m")
    names = set(load_file(str(tmp_path / "m" / WEIGHTS)))
    assert "transformer.h.0.mlp.experts.w_fc" in names
    assert not any(".experts.0." in n for n in names)


def test_per_expert_checkpoint_of_the_earlier_layout_loads(dense, mp_factory, tokens, tmp_path):
    """A checkpoint written before the experts were stacked (`...experts.<e>.c_fc.weight`)."""
    mp = mp_factory(ghost_experts=1, upcycle_noise=1e-2)
    model = to_moe(copy.deepcopy(dense), mp, seed=2).eval()
    save_model(model, tmp_path / "m")
    stacked = load_file(str(tmp_path / "m" / WEIGHTS))
    old = {}
    for name, t in stacked.items():
        prefix, _, leaf = name.rpartition(".")
        conv = {"w_fc": "c_fc.weight", "b_fc": "c_fc.bias", "w_proj": "c_proj.weight", "b_proj": "c_proj.bias"}
        if prefix.endswith(".experts") and leaf in conv:
            old.update({f"{prefix}.{e}.{conv[leaf]}": t[e].clone() for e in range(t.shape[0])})
        else:
            old[name] = t
    save_file(old, str(tmp_path / "m" / WEIGHTS))  # no sidecar hash, like the weights of an old save
    loaded, _ = load_model(tmp_path / "m")
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)
    for (_, a), (_, b) in zip(moe_layers(loaded), moe_layers(model), strict=True):
        assert torch.equal(a.experts.w_proj, b.experts.w_proj) and torch.equal(a.active, b.active)
