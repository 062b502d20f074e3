"""Loading the packed corpora that the pack stage writes (`data/packed/{train,eval}.arrow`).

    p = load_packed("data/packed/train.arrow")
    p.ids            # np.ndarray uint16 [n_blocks, block_size]
    p.domains        # np.ndarray of str [n_blocks]
    p.block_size, p.meta
    p.provenance(i)  # the documents block i covers, with offsets

The file is memory-mapped; `ids` is a zero-copy view when the file holds one
record batch and one copy of the token data otherwise (a few MB at the sizes
used here). A missing file names the stage that makes it; a truncated or
foreign file is a DataError, never a crash deep inside training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from moe_emergence.core.errors import DataError

META_KEY = b"moe_emergence.packed"
FORMAT_VERSION = 1


def packed_schema(block_size: int, meta: dict[str, Any] | None = None) -> pa.Schema:
    """The columns of a packed file; `meta` (block size, tokenizer, EOS id, split...) rides along."""
    schema = pa.schema([
        ("input_ids", pa.list_(pa.uint16(), block_size)),  # one block per row, fixed size
        ("domain", pa.string()),
        ("block_index", pa.int64()),  # position of the block in its domain's token stream
        ("doc_ids", pa.list_(pa.string())),  # the documents whose tokens the block holds, in order
        ("doc_starts", pa.list_(pa.int32())),  # where each of them starts in the block (first: 0)
        ("first_doc_offset", pa.int64()),  # token offset into the first document at block start
    ])
    if meta is not None:
        schema = schema.with_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    return schema


_REQUIRED = ("input_ids", "domain", "block_index", "doc_ids", "doc_starts", "first_doc_offset")


@dataclass
class PackedData:
    ids: np.ndarray  # uint16 [n_blocks, block_size]
    domains: np.ndarray  # str [n_blocks]
    table: pa.Table  # the whole file (provenance columns included), memory-mapped
    meta: dict[str, Any]

    @property
    def block_size(self) -> int:
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def provenance(self, i: int) -> list[dict[str, Any]]:
        """The documents block `i` covers: id, token span in the block, token offset in the document."""
        doc_ids = self.table.column("doc_ids")[i].as_py()
        starts = self.table.column("doc_starts")[i].as_py()
        first_off = int(self.table.column("first_doc_offset")[i].as_py())
        ends = starts[1:] + [self.block_size]
        return [
            {"doc_id": d, "block_start": s, "block_end": e, "doc_offset": first_off if k == 0 else 0}
            for k, (d, s, e) in enumerate(zip(doc_ids, starts, ends, strict=True))
        ]


def load_packed(path: str | Path) -> PackedData:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found: run `dvc repro pack` (the pack stage writes data/packed/*.arrow)")
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise DataError(f"{path} is not a readable Arrow IPC file (truncated or corrupt? {e}); re-run `dvc repro -s -f pack`") from e
    missing = [c for c in _REQUIRED if c not in table.column_names]
    raw_meta = (table.schema.metadata or {}).get(META_KEY)
    if missing or raw_meta is None:
        raise DataError(f"{path} is not a packed corpus (missing {missing or 'metadata'}); re-run `dvc repro -s -f pack`")
    meta = json.loads(raw_meta)
    typ = table.schema.field("input_ids").type
    if not (pa.types.is_fixed_size_list(typ) and typ.value_type == pa.uint16()):
        raise DataError(f"{path}: input_ids has type {typ}, expected fixed-size lists of uint16")
    block = typ.list_size
    if block != meta.get("block_size"):
        raise DataError(f"{path}: blocks of {block} tokens but metadata says {meta.get('block_size')}")
    chunks = table.column("input_ids").chunks
    views = [c.values.to_numpy(zero_copy_only=True)[c.offset * block : (c.offset + len(c)) * block] for c in chunks]
    flat = views[0] if len(views) == 1 else np.concatenate(views) if views else np.zeros(0, dtype=np.uint16)
    ids = flat.reshape(-1, block)
    if len(ids) and int(ids.max()) >= int(meta.get("vocab_size", 65536)):
        raise DataError(f"{path}: token id {int(ids.max())} is outside the vocabulary ({meta.get('vocab_size')})")
    domains = np.asarray(table.column("domain").to_pylist(), dtype=object)
    return PackedData(ids=ids, domains=domains, table=table, meta=meta)


def spread_rows(ids: np.ndarray, n: int) -> np.ndarray:
    """`n` rows of `ids` spread evenly over it, as int64 (the train file holds the domains one
    after another, so every domain is represented): the calibration batch of the router init."""
    idx = np.unique(np.linspace(0, len(ids) - 1, num=min(n, len(ids))).astype(np.int64))
    return np.asarray(ids[idx], dtype=np.int64)
