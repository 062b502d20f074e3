"""The model's vocabulary: which tokenizer ids it embeds, and one UNK for the rest.

A model trained from scratch on a few MB does not need 50,257 embeddings: most
GPT-2 ids never occur, and on a CPU the LM head over the full vocabulary is
most of a training step. `pack` counts the ids of the (balanced) train split
and keeps those seen at least `pack.vocab_min_count` times; every other id maps
to one UNK id. The packed files keep GPT-2 ids, and so does the analysis;
models map ids on the way in (`Vocab.encode`). `vocab_min_count: 0` keeps the
tokenizer's whole vocabulary (the GPT-2 profile, whose pretrained base embeds
all of it).

A model carries its map in its config (`kept_token_ids`), so a saved model
is self-describing: `Vocab.of_model(model)`.

Losses over different vocabularies are not comparable (predicting UNK is
easier than predicting the rare id it stands for); margins over a baseline on
the same vocabulary are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moe_emergence.core.errors import DataError

VOCAB_FILE = "vocab.json"
CONFIG_KEY = "kept_token_ids"


@dataclass(frozen=True)
class Vocab:
    source_size: int  # the tokenizer's vocabulary (50,257 for GPT-2)
    kept_ids: tuple[int, ...] | None  # sorted tokenizer ids the model embeds; None: all of them

    @property
    def size(self) -> int:
        """Rows of the model's embedding: the kept ids plus UNK, or the whole tokenizer."""
        return self.source_size if self.kept_ids is None else len(self.kept_ids) + 1

    @property
    def unk(self) -> int | None:
        return None if self.kept_ids is None else len(self.kept_ids)

    @property
    def full(self) -> bool:
        return self.kept_ids is None

    def table(self) -> np.ndarray:
        """[source_size] -> model id (uint16 when it fits)."""
        dtype = np.uint16 if self.size <= 65536 else np.int64
        if self.kept_ids is None:
            return np.arange(self.source_size, dtype=dtype)
        t = np.full(self.source_size, self.unk, dtype=dtype)
        t[np.asarray(self.kept_ids, dtype=np.int64)] = np.arange(len(self.kept_ids), dtype=dtype)
        return t

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """Tokenizer ids (any shape) -> model ids, same shape."""
        if self.kept_ids is None:
            return ids
        return self.table()[ids]

    def to_dict(self) -> dict[str, Any]:
        return {"source_size": self.source_size, "size": self.size, "unk": self.unk,
                "kept_ids": None if self.kept_ids is None else list(self.kept_ids)}

    @classmethod
    def from_counts(cls, counts: np.ndarray, min_count: int, always: tuple[int, ...] = ()) -> Vocab:
        """Keep ids counted at least `min_count` times (and `always`, e.g. EOS); 0 keeps all."""
        if min_count <= 0:
            return cls(len(counts), None)
        keep = counts >= min_count
        keep[list(always)] = True
        return cls(len(counts), tuple(int(i) for i in np.flatnonzero(keep)))

    @classmethod
    def read(cls, path: str | Path) -> Vocab:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p} not found: run `dvc repro pack` (it writes the model vocabulary)")
        try:
            raw = json.loads(p.read_text())
            kept = raw["kept_ids"]
            return cls(int(raw["source_size"]), None if kept is None else tuple(int(i) for i in kept))
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{p} is not a vocabulary file ({e}); re-run `dvc repro -s -f pack`") from None

    @classmethod
    def of_model(cls, model: Any) -> Vocab:
        """The map a model was built with (the whole vocabulary when it has none)."""
        cfg = model.config
        kept = getattr(cfg, CONFIG_KEY, None)
        if kept is None:
            return cls(int(cfg.vocab_size), None)
        return cls(int(getattr(cfg, "source_vocab_size", 50257)), tuple(int(i) for i in kept))

    def stamp(self, config: Any) -> None:
        """Record the map in a transformers config (it is saved with the model)."""
        setattr(config, CONFIG_KEY, None if self.kept_ids is None else list(self.kept_ids))
        config.source_vocab_size = self.source_size


def count_ids(ids: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(ids.reshape(-1).astype(np.int64), minlength=size)
