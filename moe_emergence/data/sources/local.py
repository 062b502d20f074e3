"""Documents from local files: JSON, JSONL, Parquet, CSV or TXT, by path or glob.

Each record becomes one document through the source's `template`; a TXT file
is one record with the field `text`. Files are read in sorted path order, so
the same files give the same documents.

DVC does not know about these files: list them under the fetch stage's `deps`
in dvc.yaml (the fetch report records each file's SHA-256 either way).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moe_emergence.core.config import LocalSource
from moe_emergence.data.documents import RawDoc
from moe_emergence.core.errors import DataError
from moe_emergence.data.templates import render, strip_patterns

_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
            ".csv": "csv", ".txt": "txt", ".text": "txt", ".md": "txt"}


def resolve_files(pattern: str, key: str) -> list[Path]:
    if glob.has_magic(pattern):
        files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"{key}: {pattern!r} matches no file (paths are relative to the repository root)")
        return files
    p = Path(pattern)
    if not p.exists():
        raise DataError(f"{key}: file {pattern!r} not found (paths are relative to the repository root)")
    if p.is_dir():
        raise DataError(f"{key}: {pattern!r} is a directory; give a file or a glob such as '{pattern}/*.jsonl'")
    return [p]


def _format(path: Path, fmt: str, key: str) -> str:
    if fmt != "auto":
        return fmt
    found = _FORMATS.get(path.suffix.lower())
    if found is None:
        raise DataError(
            f"{key}: cannot tell the format of {path} from its extension; set `format` to one of "
            "json, jsonl, parquet, csv, txt"
        )
    return found


def _records(path: Path, fmt: str) -> Iterator[tuple[str, Any]]:
    """(record locator, record) pairs of one file; a UTF-8 byte order mark (Excel, Notepad) is skipped."""
    try:
        if fmt == "txt":
            yield "", {"text": path.read_text(encoding="utf-8-sig")}
        elif fmt == "jsonl":
            with open(path, encoding="utf-8-sig") as f:
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        yield f"line {i}", json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path} line {i}: not valid JSON ({e.msg})") from e
        elif fmt == "json":
            try:
                data = json.loads(path.read_text(encoding="utf-8-sig"))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
            for i, rec in enumerate(data):
                yield f"record {i}", rec
        elif fmt == "csv":
            with open(path, encoding="utf-8-sig", newline="") as f:
                for i, rec in enumerate(csv.DictReader(f), 2):  # line 1 is the header
                    yield f"line {i}", rec
        elif fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                pf = pq.ParquetFile(path)
                i = 0
                for batch in pf.iter_batches(batch_size=1024):
                    for rec in batch.to_pylist():
                        yield f"row {i}", rec
                        i += 1
            except pa.ArrowException as e:
                raise DataError(f"{path}: not a readable Parquet file ({e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    return h.hexdigest()


def local_source(domain: str, src: LocalSource) -> tuple[dict[str, Any], Iterator[RawDoc]]:
    key = f"data.sources.{domain}.path"
    files = resolve_files(src.path, key)
    formats = [_format(p, src.format, key) for p in files]
    prov = {
        "kind": "local",
        "path": src.path,
        "template": src.template,
        "files": [{"path": p.as_posix(), "format": f, "sha256": _sha256(p)} for p, f in zip(files, formats, strict=True)],
    }

    def docs() -> Iterator[RawDoc]:
        for path, fmt in zip(files, formats, strict=True):
            name = path.as_posix()
            for loc, rec in _records(path, fmt):
                where = f"{name} {loc}".strip()
                if not isinstance(rec, dict):
                    raise DataError(f"{where}: expected an object with named fields, got {type(rec).__name__}")
                text = strip_patterns(render(src.template, rec, where), src.strip_patterns)
                doc_id = f"{name}#{loc.split()[-1]}" if loc else name
                group = doc_id
                if src.group_field:
                    if rec.get(src.group_field) is None:
                        raise DataError(f"{where} has no field {src.group_field!r} (data.sources.{domain}.group_field)")
                    group = str(rec[src.group_field])
                origin = {"path": name, "record": loc} if loc else {"path": name}
                yield RawDoc(doc_id, group, text, f"local:{name}", origin)

    return prov, docs()
