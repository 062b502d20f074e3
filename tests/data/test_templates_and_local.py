"""Local file sources (JSON, JSONL, Parquet, CSV, TXT; path or glob) with field templates."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moe_emergence.core.config import DataParams, ParamsError, LocalSource, parse_params
from moe_emergence.core.errors import DataError
from moe_emergence.data.fetch import fetch_domain

RECORDS = [
    {"question": f"What is {i} plus {i}?", "answer": f"{i} plus {i} is {2 * i}.", "explanation": "SECRET",
     "source": "bench-x", "topic": f"t{i % 3}"}
    for i in range(1, 7)
]


def _write(tmp_path, fmt):
    p = tmp_path / f"recs.{fmt}"
    if fmt == "json":
        p.write_text(json.dumps(RECORDS))
    elif fmt == "jsonl":
        p.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(RECORDS), p)
    elif fmt == "csv":
        import csv

        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(RECORDS[0]))
            w.writeheader()
            w.writerows(RECORDS)
    return p


def _data(path, **kw):
    src = LocalSource(kind="local", path=str(path), template="{question}\n\n{answer}", **kw)
    return DataParams(sources={"math": src}, min_chars={"math": 0}, max_chars=10000)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet", "csv"])
def test_template_keeps_only_named_fields(tmp_path, fmt):
    path = _write(tmp_path, fmt)
    table, counts, prov = fetch_domain("math", _data(path, group_field="topic"))
    texts = table.column("text").to_pylist()
    assert texts[0] == "What is 1 plus 1?\n\n1 plus 1 is 2."
    assert not any("SECRET" in t or "bench-x" in t for t in texts)
    assert counts["kept"]["docs"] == 6 and counts["kept"]["groups"] == 3
    assert set(table.column("group_id").to_pylist()) == {"t0", "t1", "t2"}
    assert prov["kind"] == "local" and len(prov["files"][0]["sha256"]) == 64
    origin = json.loads(table.column("origin")[0].as_py())
    assert origin["path"] == path.as_posix()


def test_txt_glob_sorted_one_doc_per_file(tmp_path):
    for name in ("b", "a", "c"):
        (tmp_path / f"{name}.txt").write_text(f"  document {name} text  \n")
    data = DataParams(sources={"prose": LocalSource(kind="local", path=str(tmp_path / "*.txt"))},
                      min_chars={"prose": 0})
    table, counts, _ = fetch_domain("prose", data)
    assert table.column("text").to_pylist() == ["document a text", "document b text", "document c text"]
    assert table.column("doc_id")[0].as_py().endswith("a.txt")


def test_missing_field_names_file_and_record(tmp_path):
    recs = RECORDS[:2] + [{"question": "no answer here"}]
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in recs))
    with pytest.raises(DataError, match=r"bad\.jsonl line 3 has no field 'answer'.*\{question\}"):
        fetch_domain("math", _data(p))


@pytest.mark.parametrize(
    "path, content, match",
    [
        ("nothing-*.jsonl", None, "matches no file"),
        ("absent.jsonl", None, "not found"),
        ("broken.jsonl", '{"question": "a", "answer": "b"}\n{oops\n', r"broken\.jsonl line 2: not valid JSON"),
        ("obj.json", '{"question": "a"}', "expected a JSON list"),
        ("data.xyz", "x", "cannot tell the format"),
    ],
)
def test_bad_local_input(tmp_path, monkeypatch, path, content, match):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / path).write_text(content)
    with pytest.raises(DataError, match=match):
        fetch_domain("math", _data(path))


def test_bad_template_is_a_params_error():
    raw = {"data": {"sources": {"math": {"kind": "local", "path": "x.jsonl", "template": "{q!r}"}}}}
    with pytest.raises(ParamsError, match=r"data\.sources\.math\.template"):
        parse_params(raw)
    raw["data"]["sources"]["math"]["template"] = "{q.attr}"
    with pytest.raises(ParamsError, match=r"data\.sources\.math\.template"):
        parse_params(raw)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_a_byte_order_mark_is_skipped(tmp_path, fmt):
    """Excel and Notepad write a UTF-8 BOM: its field names and JSON must still read."""
    path = _write(tmp_path, fmt)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    table, counts, _ = fetch_domain("math", _data(path))
    assert counts["kept"]["docs"] == 6
    assert table.column("text").to_pylist()[0] == "What is 1 plus 1?\n\n1 plus 1 is 2."
