"""The per-document table that flows from fetch to sample, and how it is stored.

One row per document: a stable `doc_id`, the `group_id` that must never straddle
train and eval, the `domain`, the `source` name, the `text`, its length, a
normalised `content_hash` (exact-duplicate key) and `origin`, a JSON locator of
where the text came from (file path, record number, dataset index, URL).
Source-level provenance (dataset id, revision, versions, licence) rides in the
Parquet schema metadata. `split` adds a `split` column ("train" / "eval").

Files are Parquet written by pyarrow directly (no pandas metadata), so the same
rows give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from moe_emergence.core.atomic import atomic_path
from moe_emergence.core.errors import DataError

SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("group_id", pa.string()),
        ("domain", pa.string()),
        ("source", pa.string()),
        ("text", pa.string()),
        ("n_chars", pa.int64()),
        ("content_hash", pa.string()),
        ("origin", pa.string()),
    ]
)
SPLITS = ("train", "eval")
PROVENANCE_KEY = b"moe_emergence.provenance"
ROW_GROUP_DOCS = 512


@dataclass(frozen=True)
class RawDoc:
    """A document as a source yields it, before filters and dedupe."""

    doc_id: str
    group_id: str
    text: str
    source: str
    origin: dict[str, Any] = field(default_factory=dict)


_WS = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Uniform newlines, no byte-order mark, no surrounding whitespace.

    Leading/trailing whitespace differs by source (code files end in a newline,
    web text does not) and would hand the router a format cue, so it goes for
    every domain alike.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.lstrip("\ufeff").strip()


def content_hash(text: str) -> str:
    """Exact-duplicate key: NFKC, case-folded, whitespace runs collapsed, then SHA-256."""
    norm = _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()[:32]


def origin_json(origin: dict[str, Any]) -> str:
    return json.dumps(origin, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def make_table(rows: Iterable[dict[str, Any]], provenance: dict[str, Any] | None = None,
               extra: dict[str, pa.DataType] | None = None) -> pa.Table:
    """Rows (dicts with the SCHEMA columns, plus `extra` ones) as a table with provenance metadata."""
    schema = SCHEMA
    for name, typ in (extra or {}).items():
        schema = schema.append(pa.field(name, typ))
    rows = list(rows)
    cols = {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in schema}
    meta = {PROVENANCE_KEY: json.dumps(provenance or {}, sort_keys=True).encode()}
    return pa.table(cols, schema=schema.with_metadata(meta))


def write_docs(path: str | Path, table: pa.Table) -> None:
    """Write a document table as Parquet, atomically and byte-reproducibly."""
    with atomic_path(path) as tmp:
        # small row groups: pack reads batch by batch, and a row group is read whole
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_DOCS)


def read_docs(path: str | Path, stage: str, columns: list[str] | None = None) -> pa.Table:
    """Read a document table written by `stage`; a missing or unreadable file is a DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found: run `dvc repro {stage}` first (the {stage} stage writes it)")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path} is not a readable Parquet file ({e}); re-run `dvc repro -s -f {stage}`") from e


def read_provenance(table_or_path: pa.Table | str | Path) -> dict[str, Any]:
    schema = (
        table_or_path.schema if isinstance(table_or_path, pa.Table) else pq.read_schema(table_or_path)
    )
    raw = (schema.metadata or {}).get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


def domain_files(directory: str | Path, stage: str) -> dict[str, Path]:
    """`<domain>.parquet` files of a stage's output directory, in sorted domain order."""
    directory = Path(directory)
    files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    if not files:
        raise DataError(
            f"{directory} holds no <domain>.parquet files: run `dvc repro {stage}` first "
            f"(the {stage} stage writes them)"
        )
    return {f.stem: f for f in files}
