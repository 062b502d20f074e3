"""Pack: GPT-2 BPE, EOS after every document, fixed blocks, train balanced across domains.

Per domain and split, documents are tokenized in batches in sampled order,
EOS is appended to each, and the stream is cut into consecutive blocks of
`block_size` tokens from offset 0. The tail shorter than a block is dropped
and counted. Every block carries provenance: the ids of the documents it
covers, where each starts in the block, and the offset into the first one.

Memory stays flat in the corpus size: tokens stream from Parquet batches into
per-domain Arrow files; balancing then streams those files batch by batch into
the outputs, written as fixed-size record batches.

Train balance (reference decisions 005/012): one local `random.Random(seed)`
shuffles each domain's block list in sorted domain order, and every list is
truncated to the smallest domain's count. The kept blocks are written in their
stream order (`block_index`), domain after domain: training draws its own
seeded permutation. Eval is not balanced.
"""

from __future__ import annotations

import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moe_emergence.core.atomic import atomic_dir, write_json
from moe_emergence.core.config import PackParams
from moe_emergence.data.documents import SPLITS, domain_files
from moe_emergence.core.errors import DataError
from moe_emergence.core.progress import progress
from moe_emergence.data.packed import FORMAT_VERSION, packed_schema
from moe_emergence.data.tokenizer import Tokenizer, load_tokenizer
from moe_emergence.data.vocab import VOCAB_FILE, Vocab, count_ids

ROWS_PER_BATCH = 1024
DOCS_PER_BATCH = 512


class DomainPacker:
    """Turns a stream of tokenized documents into full blocks with provenance."""

    def __init__(self, domain: str, block_size: int, eos_id: int, schema: pa.Schema, path: Path):
        self.domain, self.block, self.eos = domain, block_size, eos_id
        self.schema = schema
        self.writer = pa.ipc.new_file(str(path), schema)
        self.buf = np.zeros(0, dtype=np.uint16)
        self.buf_start = 0  # stream position of buf[0]
        self.doc_ids: list[str] = []  # documents with tokens still in buf (or the one buf starts in)
        self.doc_starts = np.zeros(0, dtype=np.int64)  # their stream positions
        self.n_blocks = self.n_docs = self.n_tokens = 0

    def add(self, doc_ids: list[str], ids: list[list[int]]) -> None:
        if not doc_ids:
            return
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.concatenate([np.asarray(x, dtype=np.uint16) for x in ids])
        toks = np.insert(flat, np.cumsum(lengths), self.eos)  # EOS after every document
        stream_end = self.buf_start + len(self.buf)
        starts = stream_end + np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
        self.buf = np.concatenate([self.buf, toks])
        self.doc_ids.extend(doc_ids)
        self.doc_starts = np.concatenate([self.doc_starts, starts])
        self.n_docs += len(doc_ids)
        self.n_tokens += len(toks)
        self._emit()

    def _emit(self) -> None:
        b = self.block
        n_full = len(self.buf) // b
        if n_full == 0:
            return
        lo = self.buf_start + np.arange(n_full, dtype=np.int64) * b  # block starts in the stream
        first = np.searchsorted(self.doc_starts, lo, side="right") - 1
        last = np.searchsorted(self.doc_starts, lo + b - 1, side="right") - 1
        counts = last - first + 1
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        within = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], counts)
        doc_idx = np.repeat(first, counts) + within
        starts_in_block = np.maximum(self.doc_starts[doc_idx] - np.repeat(lo, counts), 0).astype(np.int32)
        ids = pa.array(self.doc_ids, type=pa.string()).take(pa.array(doc_idx))
        tokens = self.buf[: n_full * b]
        batch = pa.record_batch(
            [
                pa.FixedSizeListArray.from_arrays(pa.array(tokens, type=pa.uint16()), b),
                pa.array([self.domain] * n_full, type=pa.string()),
                pa.array(np.arange(self.n_blocks, self.n_blocks + n_full, dtype=np.int64)),
                pa.ListArray.from_arrays(pa.array(offsets), ids),
                pa.ListArray.from_arrays(pa.array(offsets), pa.array(starts_in_block)),
                pa.array(lo - self.doc_starts[first]),
            ],
            schema=self.schema,
        )
        self.writer.write_batch(batch)
        self.n_blocks += n_full
        # keep the tokens after the last block and the documents they belong to
        self.buf = self.buf[n_full * b :].copy()
        self.buf_start += n_full * b
        keep = np.searchsorted(self.doc_starts, self.buf_start, side="right") - 1 if len(self.buf) else len(self.doc_ids)
        self.doc_ids = self.doc_ids[keep:]
        self.doc_starts = self.doc_starts[keep:]

    def close(self) -> dict[str, int]:
        self.writer.close()
        return {"docs": self.n_docs, "tokens": self.n_tokens, "blocks": self.n_blocks, "tail_tokens": len(self.buf)}


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow file, read one at a time (not mapped: RSS stays flat)."""
    with pa.OSFile(str(path)) as f:
        reader = pa.ipc.open_file(f)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


def _write_rechunked(path: Path, schema: pa.Schema, pieces: Iterator[pa.Table]) -> int:
    """Write tables as record batches of exactly ROWS_PER_BATCH rows (the last may be short)."""
    n = 0
    pending: list[pa.Table] = []
    pending_rows = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for piece in pieces:
            pending.append(piece)
            pending_rows += piece.num_rows
            while pending_rows >= ROWS_PER_BATCH:
                t = pa.concat_tables(pending)
                head, rest = t.slice(0, ROWS_PER_BATCH), t.slice(ROWS_PER_BATCH)
                writer.write_batch(head.combine_chunks().to_batches()[0].replace_schema_metadata(None))
                n += ROWS_PER_BATCH
                pending, pending_rows = [rest], rest.num_rows
        if pending_rows:
            t = pa.concat_tables(pending).combine_chunks()
            writer.write_batch(t.to_batches()[0].replace_schema_metadata(None))
            n += pending_rows
    return n


def tokenize_domain(tok: Tokenizer, path: Path, domain: str, block_size: int, schema: pa.Schema,
                    work: Path) -> dict[str, dict[str, int]]:
    """Pack one domain's sampled documents into `<work>/<split>.<domain>.arrow`, both splits."""
    packers = {s: DomainPacker(domain, block_size, tok.eos_id, schema, work / f"{s}.{domain}.arrow") for s in SPLITS}
    chars = dict.fromkeys(SPLITS, 0)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path} is not a readable Parquet file ({e}); re-run `dvc repro -s -f sample`") from e
    batches = pf.iter_batches(batch_size=DOCS_PER_BATCH, columns=["doc_id", "text", "split"])
    total = -(-pf.metadata.num_rows // DOCS_PER_BATCH)
    for batch in progress(batches, f"pack {domain} ({DOCS_PER_BATCH} docs each)", total=total, unit="batch"):
        ids, texts, splits = (batch.column(i).to_pylist() for i in range(3))
        encoded = tok.encode_batch(texts)
        for s in SPLITS:
            sel = [i for i, x in enumerate(splits) if x == s]
            packers[s].add([ids[i] for i in sel], [encoded[i] for i in sel])
            chars[s] += sum(len(texts[i]) for i in sel)
    return {s: {**packers[s].close(), "chars": chars[s]} for s in SPLITS}


def _vocab_report(vocab: Vocab, counts: dict[str, np.ndarray]) -> dict[str, Any]:
    """Size of the model vocabulary and the share of each split's tokens that become UNK."""
    kept = np.zeros(vocab.source_size, dtype=bool)
    kept[list(vocab.kept_ids) if vocab.kept_ids is not None else slice(None)] = True
    out: dict[str, Any] = {"size": vocab.size, "kept_ids": int(kept.sum())}
    for s, c in counts.items():
        total = int(c.sum())
        out[f"{s}_unk_rate"] = round(float(c[~kept].sum()) / max(1, total), 6)
        out[f"{s}_distinct_ids"] = int((c > 0).sum())
    return out


def run_pack(pp: PackParams, sampled_dir: str | Path, out_dir: str | Path, report: str | Path,
             tok: Tokenizer | None = None) -> dict[str, Any]:
    files = domain_files(sampled_dir, "sample")
    tok = tok or load_tokenizer(pp.tokenizer)
    domains = sorted(files)
    meta = {"block_size": pp.block_size, "eos_id": tok.eos_id, "tokenizer": tok.name,
            "vocab_size": tok.vocab_size, "domains": domains, "format_version": FORMAT_VERSION}
    stream_schema = packed_schema(pp.block_size)
    stats: dict[str, dict[str, Any]] = {s: {} for s in SPLITS}
    warnings: list[str] = []
    with atomic_dir(out_dir) as tmp:
        work = tmp / ".work"
        work.mkdir()
        for d in domains:
            per_split = tokenize_domain(tok, files[d], d, pp.block_size, stream_schema, work)
            for s in SPLITS:
                stats[s][d] = per_split[s]
        empty = [d for d in domains if stats["train"][d]["blocks"] == 0]
        if empty:
            d = empty[0]
            raise DataError(
                f"pack: the train split of domain {d!r} yields no block of {pp.block_size} tokens "
                f"({stats['train'][d]['tokens']} tokens); raise sample.size_mb or lower pack.block_size"
            )
        for d in domains:
            if stats["eval"][d]["blocks"] == 0:
                raise DataError(
                    f"pack: the eval split of domain {d!r} yields no block of {pp.block_size} tokens "
                    f"({stats['eval'][d]['tokens']} tokens): nothing would measure that domain; raise "
                    "sample.size_mb (or sample.eval_max_mb) or lower pack.block_size"
                )

        # imbalance is judged on tokens before balancing, tail and EOS included
        toks = {d: stats["train"][d]["tokens"] for d in domains}
        ratio = max(toks.values()) / max(1, min(toks.values()))
        if ratio > pp.imbalance_warn_ratio:
            warnings.append(
                f"train tokens differ by {ratio:.2f}x across domains (> pack.imbalance_warn_ratio "
                f"{pp.imbalance_warn_ratio}); {'balanced by truncation' if pp.balance_train else 'NOT balanced'}"
            )

        m = min(stats["train"][d]["blocks"] for d in domains)
        rng = random.Random(pp.seed)
        keep: dict[str, np.ndarray] = {}
        for d in domains:
            n = stats["train"][d]["blocks"]
            mask = np.ones(n, dtype=bool)
            if pp.balance_train:
                order = list(range(n))
                rng.shuffle(order)
                mask[:] = False
                mask[order[:m]] = True
            keep[d] = mask

        # The shuffle decides which blocks survive; they are written in stream order, read
        # batch by batch (training draws its own seeded permutation of the blocks).
        def train_pieces() -> Iterator[pa.Table]:
            for d in domains:
                for batch in _batches(work / f"train.{d}.arrow"):
                    sel = keep[d][batch.column("block_index").to_numpy()]
                    yield pa.Table.from_batches([batch.filter(pa.array(sel))])

        def eval_pieces() -> Iterator[pa.Table]:
            for d in domains:
                for batch in _batches(work / f"eval.{d}.arrow"):
                    yield pa.Table.from_batches([batch])

        n_train = _write_rechunked(tmp / "train.arrow", packed_schema(pp.block_size, {**meta, "split": "train"}),
                                   train_pieces())
        n_eval = _write_rechunked(tmp / "eval.arrow", packed_schema(pp.block_size, {**meta, "split": "eval"}),
                                  eval_pieces())
        shutil.rmtree(work)
        counts = {s: np.zeros(tok.vocab_size, dtype=np.int64) for s in SPLITS}
        for s in SPLITS:
            for batch in _batches(tmp / f"{s}.arrow"):
                counts[s] += count_ids(batch.column("input_ids").values.to_numpy(zero_copy_only=False),
                                       tok.vocab_size)
        vocab = Vocab.from_counts(counts["train"], pp.vocab_min_count, always=(tok.eos_id,))
        write_json(tmp / VOCAB_FILE, {**vocab.to_dict(), "min_count": pp.vocab_min_count,
                                      "counted_on": "train.arrow", "tokenizer": tok.name})

    for w in warnings:
        print(f"pack: warning: {w}", file=sys.stderr)
    for d in domains:
        st = stats["train"][d]
        st["blocks_balanced"] = int(keep[d].sum())
        st["tokens_balanced"] = int(keep[d].sum()) * pp.block_size
        for s in SPLITS:
            x = stats[s][d]
            x["tokens_per_char"] = round(x["tokens"] / x["chars"], 4) if x["chars"] else 0.0
    summary = {
        "train": {"domains": stats["train"], "blocks": n_train, "tokens": n_train * pp.block_size,
                  "imbalance_ratio": round(ratio, 4), "balanced": pp.balance_train},
        "eval": {"domains": stats["eval"], "blocks": n_eval, "tokens": n_eval * pp.block_size},
        "block_size": pp.block_size,
        "tokenizer": {"name": tok.name, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id},
        "model_vocab": _vocab_report(vocab, counts),
        "warnings": warnings,
    }
    write_json(report, summary)
    return summary
