"""Packing: EOS after every document, fixed blocks, the dropped tail, balance, uint16 round trip,
provenance that traces every token back to its document, and the loader's errors."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_emergence.core.config import PackParams
from moe_emergence.data.documents import content_hash, make_table, write_docs
from moe_emergence.core.errors import DataError
from moe_emergence.data.pack import DomainPacker, run_pack
from moe_emergence.data.packed import load_packed, packed_schema

EOS = 50256


def _read(path):
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(st.lists(st.integers(0, 50000), max_size=40), min_size=1, max_size=30),
    block=st.integers(1, 17),
    batch=st.integers(1, 7),
)
def test_blocks_eos_tail_and_provenance(tmp_path_factory, docs, block, batch):
    path = tmp_path_factory.mktemp("pk") / "x.arrow"
    p = DomainPacker("code", block, EOS, packed_schema(block), path)
    ids = [f"d{i}" for i in range(len(docs))]
    for i in range(0, len(docs), batch):  # arbitrary batching must not matter
        p.add(ids[i : i + batch], docs[i : i + batch])
    st_ = p.close()
    stream = [t for d in docs for t in d + [EOS]]
    assert st_["tokens"] == len(stream) and st_["docs"] == len(docs)
    assert st_["blocks"] == len(stream) // block and st_["tail_tokens"] == len(stream) % block
    t = _read(path)
    assert t.num_rows == st_["blocks"]
    flat = [x for row in t.column("input_ids").to_pylist() for x in row]
    assert flat == stream[: st_["blocks"] * block]
    assert t.column("block_index").to_pylist() == list(range(st_["blocks"]))
    by_id = dict(zip(ids, docs, strict=True))
    for k in range(t.num_rows):
        row = t.column("input_ids")[k].as_py()
        d_ids, starts = t.column("doc_ids")[k].as_py(), t.column("doc_starts")[k].as_py()
        off0 = t.column("first_doc_offset")[k].as_py()
        assert starts[0] == 0 and starts == sorted(starts)
        for j, (d, s) in enumerate(zip(d_ids, starts, strict=True)):
            e = starts[j + 1] if j + 1 < len(starts) else block
            off = off0 if j == 0 else 0
            assert row[s:e] == (by_id[d] + [EOS])[off : off + e - s]


def _sampled(tmp_path, sizes, seed=0):
    """A sampled dir: per domain, (n_train, n_eval) documents of random English-ish words."""
    r = random.Random(seed)
    words = ["the", "cat", "sat", "on", "mat", "def", "return", "x", "=", "1", "+", "sum", "of", "is"]
    out = tmp_path / "sampled"
    out.mkdir()
    docs = {}
    for dom, (n_tr, n_ev) in sizes.items():
        rows = []
        for i in range(n_tr + n_ev):
            text = " ".join(r.choice(words) for _ in range(r.randint(5, 60)))
            doc_id = f"{dom}/{i:04d}"
            docs[doc_id] = text
            rows.append({"doc_id": doc_id, "group_id": doc_id, "domain": dom, "source": "t", "text": text,
                         "n_chars": len(text), "content_hash": content_hash(text), "origin": "{}",
                         "split": "train" if i < n_tr else "eval"})
        write_docs(out / f"{dom}.parquet", make_table(rows, {"kind": "test"}, extra={"split": pa.string()}))
    return out, docs


def test_run_pack_balances_train_and_round_trips(tmp_path, tok):
    sampled, docs = _sampled(tmp_path, {"code": (120, 10), "math": (60, 8), "prose": (90, 4)})
    pp = PackParams(block_size=32)
    rep = run_pack(pp, sampled, tmp_path / "packed", tmp_path / "pack.json", tok=tok)
    tr = load_packed(tmp_path / "packed" / "train.arrow")
    ev = load_packed(tmp_path / "packed" / "eval.arrow")
    blocks = {d: rep["train"]["domains"][d]["blocks"] for d in ("code", "math", "prose")}
    m = min(blocks.values())
    assert tr.ids.dtype == np.uint16 and tr.ids.shape == (3 * m, 32)
    assert {d: int((tr.domains == d).sum()) for d in blocks} == dict.fromkeys(blocks, m)
    assert rep["train"]["domains"]["code"]["blocks_balanced"] == m
    assert len(ev) == rep["eval"]["blocks"] and int((ev.domains == "prose").sum()) > 0
    assert tr.meta["eos_id"] == 50256 and tr.meta["split"] == "train" and tr.block_size == 32
    # train blocks of a domain are a shuffle, not the first m
    code_idx = tr.table.column("block_index").to_numpy()[tr.domains == "code"]
    assert sorted(code_idx.tolist()) != list(range(m)) or blocks["code"] == m
    # every token traces back to its document
    for k in range(0, len(tr), 7):
        for seg in tr.provenance(k):
            want = tok.encode_batch([docs[seg["doc_id"]]])[0] + [50256]
            got = tr.ids[k, seg["block_start"] : seg["block_end"]].tolist()
            assert got == want[seg["doc_offset"] : seg["doc_offset"] + len(got)]
    # EOS closes every document: as many EOS in a domain's stream as documents started in it
    tail = rep["train"]["domains"]["math"]["tail_tokens"]
    assert rep["train"]["domains"]["math"]["tokens"] == blocks["math"] * 32 + tail


def test_run_pack_is_byte_deterministic(tmp_path, tok):
    sampled, _ = _sampled(tmp_path, {"code": (50, 5), "math": (40, 5)})
    for name in ("a", "b"):
        run_pack(PackParams(block_size=16), sampled, tmp_path / name, tmp_path / f"{name}.json", tok=tok)
    for f in ("train.arrow", "eval.arrow", "vocab.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["eval.arrow", "train.arrow", "vocab.json"]


def test_vocab_keeps_the_train_ids_seen_often_enough(tmp_path, tok):
    import json

    import numpy as np

    from moe_emergence.data.vocab import Vocab

    sampled, _ = _sampled(tmp_path, {"code": (50, 5), "math": (40, 5)})
    run_pack(PackParams(block_size=16, vocab_min_count=3), sampled, tmp_path / "p", tmp_path / "p.json", tok=tok)
    vocab = Vocab.read(tmp_path / "p" / "vocab.json")
    counts = np.bincount(load_packed(tmp_path / "p" / "train.arrow").ids.reshape(-1).astype(np.int64),
                         minlength=tok.vocab_size)
    assert set(vocab.kept_ids) == set(np.flatnonzero(counts >= 3)) | {tok.eos_id}
    rep = json.loads((tmp_path / "p.json").read_text())["model_vocab"]
    assert rep["size"] == len(vocab.kept_ids) + 1 and 0 <= rep["eval_unk_rate"] < 1


def test_domain_without_a_train_block_is_an_error(tmp_path, tok):
    sampled, _ = _sampled(tmp_path, {"code": (50, 5), "math": (1, 1)})
    with pytest.raises(DataError, match=r"train split of domain 'math' yields no block of 512 tokens"):
        run_pack(PackParams(block_size=512), sampled, tmp_path / "packed", tmp_path / "p.json", tok=tok)
    assert not (tmp_path / "packed").exists()


def test_loader_errors(tmp_path, tok):
    with pytest.raises(DataError, match=r"not found: run `dvc repro pack`"):
        load_packed(tmp_path / "nope.arrow")
    sampled, _ = _sampled(tmp_path, {"code": (50, 5)})
    run_pack(PackParams(block_size=16), sampled, tmp_path / "packed", tmp_path / "p.json", tok=tok)
    good = (tmp_path / "packed" / "train.arrow").read_bytes()
    bad = tmp_path / "trunc.arrow"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="not a readable Arrow IPC file"):
        load_packed(bad)
    bad.write_bytes(b"definitely not arrow")
    with pytest.raises(DataError, match="not a readable Arrow IPC file"):
        load_packed(bad)
    other = tmp_path / "other.arrow"
    with pa.OSFile(str(other), "wb") as f, pa.ipc.new_file(f, pa.schema([("x", pa.int32())])) as w:
        w.write_table(pa.table({"x": pa.array([1, 2], pa.int32())}))
    with pytest.raises(DataError, match="not a packed corpus"):
        load_packed(other)


def test_unbalanced_train_keeps_every_block(tmp_path, tok, capsys):
    sampled, _ = _sampled(tmp_path, {"code": (120, 5), "math": (30, 5)})
    rep = run_pack(PackParams(block_size=16, balance_train=False), sampled, tmp_path / "packed", tmp_path / "p.json",
                   tok=tok)
    tr = load_packed(tmp_path / "packed" / "train.arrow")
    assert len(tr) == sum(d["blocks"] for d in rep["train"]["domains"].values())
    assert "NOT balanced" in capsys.readouterr().err


def test_a_domain_without_an_eval_block_is_an_error(tmp_path, tok):
    """Nothing would measure that domain: refuse, and leave the previous data/packed in place."""
    sampled, _ = _sampled(tmp_path, {"code": (120, 10), "math": (60, 8), "prose": (90, 0)})
    with pytest.raises(DataError, match="eval split of domain 'prose'"):
        run_pack(PackParams(block_size=32), sampled, tmp_path / "packed", tmp_path / "pack.json", tok=tok)
    assert not (tmp_path / "packed").exists()
