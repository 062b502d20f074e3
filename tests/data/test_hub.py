"""Online sources, offline: `datasets` streaming over local JSONL with the shuffle buffer, a
MathQA-style zip served from 127.0.0.1 (and rejected when corrupt or path-traversing), and the
message a hub source gives with no network."""

from __future__ import annotations

import functools
import http.server
import io
import json
import threading
import zipfile

import pytest

from moe_emergence.core.config import DataParams, HubSource
from moe_emergence.core.errors import DataError
from moe_emergence.data.fetch import fetch_domain


@pytest.fixture
def jsonl(tmp_path):
    p = tmp_path / "stream.jsonl"
    p.write_text("\n".join(json.dumps({"content": f"def f{i}():\n    return {i} * {i} + {i}  # n{i}", "repo": f"r{i % 4}"})
                           for i in range(300)) + "\n")
    return p


def _hf(path, **kw):
    src = HubSource(kind="hf", dataset="json", data_files=str(path), template="{content}", **kw)
    return DataParams(sources={"code": src}, min_chars={"code": 10})


def test_streaming_with_seeded_shuffle_buffer(jsonl, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    data = _hf(jsonl, shuffle_buffer=50, group_field="repo", max_docs=100)
    table, counts, prov = fetch_domain("code", data)
    texts = table.column("text").to_pylist()
    assert counts["kept"]["docs"] == 100 and counts["capped_at_max_docs"]
    head = [f"def f{i}():" for i in range(100)]
    firsts = [t.split("\n")[0] for t in texts]
    assert firsts != head  # not the head of the stream
    assert max(int(f[5:-3]) for f in firsts) >= 100  # the buffer reaches past the first 100 rows
    assert prov["streaming"] and prov["shuffle"] == {"seed": 0, "buffer_size": 50} and prov["dataset"] == "json"
    assert set(table.column("group_id").to_pylist()) <= {f"json/r{i}" for i in range(4)}
    again, _, _ = fetch_domain("code", data)
    assert again.column("text").to_pylist() == texts  # seeded: the same sample every run
    data.seed = 1
    other, _, _ = fetch_domain("code", data)
    assert other.column("text").to_pylist() != texts


def test_streaming_missing_template_field(jsonl, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    data = _hf(jsonl)
    data.sources["code"].template = "{content}\n{license}"
    with pytest.raises(DataError, match="has no field 'license'"):
        fetch_domain("code", data)


def test_hub_dataset_offline_names_the_embedded_alternative(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = DataParams(sources={"prose": HubSource(kind="hf", dataset="allenai/c4", config="en")})
    with pytest.raises(DataError, match=r"allenai/c4.*data\.sources\.prose\.kind: embedded"):
        fetch_domain("prose", data)


@pytest.mark.parametrize("pinned", [None, "v1.0"])
def test_the_revision_is_resolved_once_and_that_one_is_loaded_and_recorded(monkeypatch, tmp_path, jsonl, pinned):
    """A hub dataset loads at the commit it resolved to (not whatever `main` is a moment later)."""
    import datasets
    import huggingface_hub

    from moe_emergence.data.sources import hub

    monkeypatch.chdir(tmp_path)
    asked, loaded = [], []

    class Api:
        def dataset_info(self, name, revision=None, timeout=None):
            asked.append(revision)
            return type("Info", (), {"sha": f"sha-of-{revision or 'main'}"})()

    real = datasets.load_dataset

    def load(**kw):
        loaded.append(kw.get("revision"))
        return real(path="json", data_files=str(jsonl), split="train", streaming=True)

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(datasets, "load_dataset", load)
    monkeypatch.setattr(hub, "hub_unreachable", lambda: None)
    src = HubSource(kind="hf", dataset="org/corpus", template="{content}", revision=pinned)
    _, _, prov = fetch_domain("code", DataParams(sources={"code": src}, min_chars={"code": 10}))
    want = f"sha-of-{pinned or 'main'}"
    assert asked == [pinned] and loaded == [want]
    assert prov["revision"] == want and prov["requested_revision"] == pinned


MATHQA = [
    {"Problem": f"a train travels {i} km in 2 hours . find its speed ?", "Rationale": f'"speed = {i} / 2 km / hr . answer : a"',
     "options": "a ) 1 , b ) 2", "correct": "a", "annotated_formula": "divide(n0,n1)", "category": "physics"}
    for i in range(10, 30)
]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def served(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _mathqa(url):
    src = HubSource(kind="hf", url=url, split="train", template="{Problem}\n\n{Rationale}")
    return DataParams(sources={"math": src})


def test_mathqa_zip_over_http(served, tmp_path, monkeypatch):
    www, base = served
    monkeypatch.chdir(tmp_path)
    (www / "MathQA.zip").write_bytes(_zip({"train.json": json.dumps(MATHQA).encode(), "test.json": b"[]"}))
    table, counts, prov = fetch_domain("math", _mathqa(f"{base}/MathQA.zip"))
    texts = table.column("text").to_pylist()
    assert counts["kept"]["docs"] == 20
    assert texts[0] == 'a train travels 10 km in 2 hours . find its speed ?\n\n"speed = 10 / 2 km / hr . answer : a"'
    assert not any("Problem:" in t or "physics" in t or "divide(" in t for t in texts)
    assert prov["url"].endswith("MathQA.zip") and len(prov["sha256"]) == 64 and prov["member"] == "train.json"
    assert table.column("doc_id")[0].as_py() == "mathqa/train/000000"
    # cached: a second fetch needs no server
    (www / "MathQA.zip").unlink()
    again, _, _ = fetch_domain("math", _mathqa(f"{base}/MathQA.zip"))
    assert again.column("text").to_pylist() == texts


@pytest.mark.parametrize("evil", ["../evil.json", "/abs/evil.json", "sub/../../evil.json"])
def test_path_traversing_zip_is_rejected(served, tmp_path, monkeypatch, evil):
    www, base = served
    monkeypatch.chdir(tmp_path)
    (www / "bad.zip").write_bytes(_zip({"train.json": json.dumps(MATHQA).encode(), evil: b"pwned"}))
    with pytest.raises(DataError, match="outside the target directory"):
        fetch_domain("math", _mathqa(f"{base}/bad.zip"))
    assert not (tmp_path / "evil.json").exists() and not list(tmp_path.rglob("evil.json"))


def test_corrupt_zip_is_rejected_and_not_cached(served, tmp_path, monkeypatch):
    www, base = served
    monkeypatch.chdir(tmp_path)
    good = _zip({"train.json": json.dumps(MATHQA).encode()})
    (www / "trunc.zip").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="not a valid zip"):
        fetch_domain("math", _mathqa(f"{base}/trunc.zip"))
    (www / "trunc.zip").write_bytes(good)  # fixed upstream: the retry downloads again
    table, _, _ = fetch_domain("math", _mathqa(f"{base}/trunc.zip"))
    assert table.num_rows == 20


def test_download_failure_names_the_embedded_alternative(served, tmp_path, monkeypatch):
    _, base = served
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"could not download.*data\.sources\.math\.kind: embedded"):
        fetch_domain("math", _mathqa(f"{base}/absent.zip"))
