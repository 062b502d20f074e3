"""Fetch: length filters, normalised exact dedupe, provenance columns, and the embedded corpora."""

from __future__ import annotations

import json
import platform
import re

import pytest

from moe_emergence.core.config import DataParams, EmbeddedSource, LocalSource
from moe_emergence.data.documents import SCHEMA, clean_text, content_hash, read_provenance
from moe_emergence.core.errors import DataError
from moe_emergence.data.fetch import fetch_domain, run_fetch


def _local(tmp_path, texts, **kw):
    p = tmp_path / "docs.jsonl"
    p.write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    return DataParams(sources={"prose": LocalSource(kind="local", path=str(p))}, **kw)


def test_filters_are_strict_and_dedupe_is_normalised(tmp_path):
    texts = [
        "x" * 200,  # == min: too short (strict)
        "y" * 201,
        "z" * 300,
        "Z" * 300,  # case variant of the previous: duplicate
        "  " + "y" * 201 + "\n",  # whitespace variant: duplicate
        "w" * 1000,  # == max: too long
    ]
    data = _local(tmp_path, texts, min_chars={"prose": 200}, max_chars=1000)
    table, counts, _ = fetch_domain("prose", data)
    assert table.column("text").to_pylist() == ["y" * 201, "z" * 300]
    assert counts["filtered"] == {"too_short": 1, "too_long": 1}
    assert counts["duplicates"] == 2 and counts["kept"]["docs"] == 2
    assert table.schema.names == SCHEMA.names
    assert len(set(table.column("content_hash").to_pylist())) == 2


def test_content_hash_normalisation():
    assert content_hash("Hello   World\n") == content_hash("hello world")
    assert content_hash("hello world") != content_hash("hello  worlds")
    assert clean_text("\ufeff  a\r\nb  \n") == "a\nb"


def test_empty_after_filters_is_an_error(tmp_path):
    data = _local(tmp_path, ["short", "tiny"], min_chars={"prose": 200})
    with pytest.raises(DataError, match=r"no documents left after filters \(2 read: 2 with <= 200"):
        fetch_domain("prose", data)


def test_run_fetch_writes_all_or_nothing(tmp_path):
    good = _local(tmp_path, ["a" * 300, "b" * 300], min_chars={"prose": 200})
    good.sources["math"] = LocalSource(kind="local", path=str(tmp_path / "missing.jsonl"))
    out = tmp_path / "raw"
    with pytest.raises(DataError, match="missing.jsonl"):
        run_fetch(good, out, tmp_path / "fetch.json")
    assert not out.exists() and not list(tmp_path.glob(".raw*"))
    del good.sources["math"]
    summary = run_fetch(good, out, tmp_path / "fetch.json")
    assert summary["domains"]["prose"]["kept"]["docs"] == 2
    assert read_provenance(out / "prose.parquet")["kind"] == "local"


@pytest.fixture(scope="module")
def embedded():
    data = DataParams(sources={d: EmbeddedSource(kind="embedded", n_docs=300) for d in ("code", "math", "prose")})
    return {d: fetch_domain(d, data) for d in data.sources}


def test_embedded_code_is_stdlib_grouped_by_package(embedded):
    table, counts, prov = embedded["code"]
    ids = table.column("doc_id").to_pylist()
    assert prov["python"] == platform.python_version() and prov["license"] == "PSF-2.0"
    assert not any("site-packages" in i for i in ids)
    groups = dict(zip(ids, table.column("group_id").to_pylist(), strict=True))
    codecs = [g for i, g in groups.items() if i.startswith("stdlib/encodings/")]
    assert len(codecs) > 5 and set(codecs) == {"stdlib/encodings/"}  # generated codecs: one group
    assert groups.get("stdlib/argparse.py", "stdlib/argparse.py") == "stdlib/argparse.py"
    assert all(100 < n < 10000 for n in table.column("n_chars").to_pylist())
    assert counts["kept"]["chars"] > 2**20


def test_embedded_math_is_clean_seeded_and_grouped_by_template(embedded):
    table, counts, prov = embedded["math"]
    texts = table.column("text").to_pylist()
    assert counts["kept"]["docs"] > 250
    assert not any("final answer" in t or "Do not include units" in t for t in texts)
    assert not any(re.search(r"^####", t, re.M) for t in texts)
    assert all("\n\n" in t for t in texts)  # problem, blank line, worked solution
    groups = set(table.column("group_id").to_pylist())
    assert all(re.fullmatch(r"gsm_symbolic/t\d{3}", g) for g in groups) and len(groups) < 100
    again, _, _ = fetch_domain("math", DataParams(sources={"math": EmbeddedSource(kind="embedded", n_docs=300)}))
    assert again.column("text").to_pylist() == texts


def test_embedded_prose_has_no_markup_and_chunks_fit(embedded):
    table, counts, prov = embedded["prose"]
    texts = table.column("text").to_pylist()
    assert counts["kept"]["chars"] > 2**20
    assert not any("'''" in t or re.search(r"^==.*==$", t, re.M) or "[[" in t or "\xa0" in t for t in texts)
    assert all(200 < len(t) < 10000 for t in texts)
    ids = table.column("doc_id").to_pylist()
    groups = table.column("group_id").to_pylist()
    chunked = [g for i, g in zip(ids, groups, strict=True) if i.startswith("enwiki/") and i.endswith("/001")]
    assert chunked and all(g.startswith("enwiki/") for g in chunked)  # articles cut into chunks share a group
    assert any(i.startswith("lee/") for i in ids)
