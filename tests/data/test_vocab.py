"""The model vocabulary: kept ids by train count, one UNK for the rest, carried by the model."""

from __future__ import annotations

import numpy as np
import pytest

from moe_emergence.core.errors import DataError
from moe_emergence.data.vocab import Vocab, count_ids


def test_kept_ids_by_count_and_unk():
    counts = np.array([0, 5, 4, 9, 0, 1])
    v = Vocab.from_counts(counts, 5, always=(5,))
    assert v.kept_ids == (1, 3, 5) and v.size == 4 and v.unk == 3
    ids = np.array([[1, 2, 3], [5, 0, 4]])
    assert v.encode(ids).tolist() == [[0, 3, 1], [2, 3, 3]]  # rare and unseen ids become UNK


def test_min_count_zero_keeps_the_whole_vocabulary():
    v = Vocab.from_counts(np.array([0, 3, 0]), 0)
    assert v.full and v.size == 3 and v.unk is None
    ids = np.array([[0, 2]])
    assert v.encode(ids) is ids


def test_round_trip_through_file_and_model_config(tmp_path):
    import json

    from moe_emergence.core.config import ArchParams
    from moe_emergence.model.gpt2 import make_dense

    v = Vocab.from_counts(count_ids(np.array([[1, 1, 7, 7, 7]]), 10), 2)
    (tmp_path / "vocab.json").write_text(json.dumps(v.to_dict()))
    assert Vocab.read(tmp_path / "vocab.json") == v
    model = make_dense(ArchParams(n_layer=1, n_embd=8, n_head=2, n_positions=8), vocab_size=v.size, seed=0)
    v.stamp(model.config)
    assert Vocab.of_model(model) == v
    # the map is part of the saved config: a reloaded model knows its vocabulary
    from transformers import GPT2Config

    assert Vocab.of_model(type("M", (), {"config": GPT2Config.from_dict(model.config.to_dict())})) == v


def test_missing_or_foreign_file_names_the_stage(tmp_path):
    with pytest.raises(DataError, match="dvc repro pack"):
        Vocab.read(tmp_path / "vocab.json")
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(DataError, match="not a vocabulary file"):
        Vocab.read(tmp_path / "vocab.json")
