"""Shared helpers for the data tests: small document tables and the embedded tokenizer."""

from __future__ import annotations

import os

import pytest

from moe_emergence.data.documents import content_hash, make_table, origin_json

# No test may touch the network: hub lookups fail fast instead of waiting on timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def doc_rows(docs, domain="code", split=None):
    """Rows in the documents schema from (doc_id, group_id, text) triples."""
    rows = []
    for doc_id, group, text in docs:
        r = {"doc_id": doc_id, "group_id": group, "domain": domain, "source": "test", "text": text,
             "n_chars": len(text), "content_hash": content_hash(text), "origin": origin_json({})}
        if split is not None:
            r["split"] = split(doc_id) if callable(split) else split
        rows.append(r)
    return rows


def docs_table(docs, domain="code", provenance=None):
    return make_table(doc_rows(docs, domain), provenance or {"kind": "test"})


@pytest.fixture(scope="session")
def tok():
    from moe_emergence.data.tokenizer import load_tokenizer

    return load_tokenizer("embedded")


@pytest.fixture(scope="session")
def make_docs():  # a pure builder: safe to share across hypothesis inputs
    """Builder of document tables: make_docs([(doc_id, group_id, text), ...], domain=...)."""
    return docs_table
