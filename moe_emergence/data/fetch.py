"""Fetch: each domain's documents, length-filtered, exact-deduplicated, with provenance.

Filters are strict on both sides:
`min_chars < len(text) < max_chars` (code 100, math 0, prose 200; max 10,000).
Exact duplicates share a normalised content hash (NFKC, case-folded,
whitespace collapsed); the first one in source order is kept.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa

from moe_emergence.core.atomic import atomic_dir, write_json
from moe_emergence.core.config import DataParams
from moe_emergence.data.documents import (
    clean_text,
    content_hash,
    make_table,
    origin_json,
    write_docs,
)
from moe_emergence.core.errors import DataError
from moe_emergence.core.progress import progress
from moe_emergence.data.sources import open_source


def fetch_domain(domain: str, data: DataParams) -> tuple[pa.Table, dict[str, Any], dict[str, Any]]:
    """(documents table, counts, source provenance) for one domain."""
    src = data.sources[domain]
    prov, docs = open_source(domain, data)
    lo, hi = data.min_chars.get(domain, 0), data.max_chars
    read = read_chars = too_short = too_long = dups = 0
    seen_hash: set[str] = set()
    seen_ids: set[str] = set()
    rows: list[dict[str, Any]] = []
    capped = False
    for raw in progress(docs, f"fetch {domain}", unit="doc"):
        read += 1
        read_chars += len(raw.text)
        text = clean_text(raw.text)
        n = len(text)
        if n <= lo:
            too_short += 1
            continue
        if n >= hi:
            too_long += 1
            continue
        h = content_hash(text)
        if h in seen_hash:
            dups += 1
            continue
        if raw.doc_id in seen_ids:
            raise DataError(f"data.sources.{domain}: two documents share the id {raw.doc_id!r}")
        seen_hash.add(h)
        seen_ids.add(raw.doc_id)
        rows.append({
            "doc_id": raw.doc_id, "group_id": raw.group_id, "domain": domain, "source": raw.source,
            "text": text, "n_chars": n, "content_hash": h, "origin": origin_json(raw.origin),
        })
        if len(rows) >= src.max_docs:
            capped = True
            break
    if not rows:
        raise DataError(
            f"data.sources.{domain}: no documents left after filters ({read} read: {too_short} with "
            f"<= {lo} characters, {too_long} with >= {hi}, {dups} duplicates); relax "
            f"data.min_chars.{domain} / data.max_chars or choose another source"
        )
    kept_chars = sum(r["n_chars"] for r in rows)
    counts = {
        "read": {"docs": read, "chars": read_chars},
        "filtered": {"too_short": too_short, "too_long": too_long},
        "after_filters": {"docs": read - too_short - too_long},
        "duplicates": dups,
        "kept": {"docs": len(rows), "chars": kept_chars, "groups": len({r["group_id"] for r in rows})},
        "capped_at_max_docs": capped,
    }
    prov = {**prov, "domain": domain, "filters": {"min_chars": lo, "max_chars": hi}}
    return make_table(rows, prov), counts, prov


def run_fetch(data: DataParams, out_dir: str | Path, report: str | Path) -> dict[str, Any]:
    """Write `<out_dir>/<domain>.parquet` for every domain and the fetch report; all or nothing."""
    counts: dict[str, Any] = {}
    provenance: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for domain in data.sources:
            table, c, prov = fetch_domain(domain, data)
            write_docs(tmp / f"{domain}.parquet", table)
            counts[domain], provenance[domain] = c, prov
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    summary = {"domains": counts, "python": sys.version.split()[0]}
    write_json(report, summary)
    return summary
