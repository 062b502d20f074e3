"""Checks `runs.py` makes before any work: a pretrained base's depth against model.moe_layers,
a model.init that cannot be had, a batch larger than the train set. Each is one ParamsError."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from moe_emergence.core.config import ModelParams, ParamsError
from moe_emergence.training.runs import check_batch, pretrained


@pytest.fixture
def two_layer_gpt2(tmp_path):
    path = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=300)).save_pretrained(path)
    return path


def test_moe_layers_past_a_pretrained_models_last_layer(two_layer_gpt2):
    with pytest.raises(ParamsError, match=r"`model.moe_layers` index 5 is outside the layers 0..1"):
        pretrained(ModelParams(init=str(two_layer_gpt2), moe_layers=[1, 5]))
    assert pretrained(ModelParams(init=str(two_layer_gpt2), moe_layers=[1])).config.n_layer == 2


def test_a_missing_pretrained_model_is_a_params_error(tmp_path):
    with pytest.raises(ParamsError, match=r"`model.init`.*not a directory"):
        pretrained(ModelParams(init=str(tmp_path / "nope"), moe_layers=[0]))


def test_a_batch_larger_than_the_train_set():
    with pytest.raises(ParamsError, match=r"`train.batch_size` x `train.grad_accum` \(64 blocks\) exceeds the 10"):
        check_batch(10, 64, "train")
    check_batch(64, 64, "train")
