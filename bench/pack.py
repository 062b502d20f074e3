"""Pack throughput against the raw fast tokenizer, and pack's peak memory as the corpus grows.

The documents are the embedded corpora in full (code, math, prose; about 8 MB
of characters), written as sampled-stage Parquet. In one process, in
interleaved rounds:

- raw: the Rust GPT-2 tokenizer's batch encoding of all documents in one call
  (`encode_batch_fast`, ids extracted);
- raw_batched: the same encoding in the batches of 512 documents that pack
  uses (on 2 cores this is faster than one huge call, so it is the stricter
  baseline: the ratio against it is pack's own overhead);
- pack: the whole pack stage on the same documents (Parquet read in batches,
  the same tokenizer, EOS, blocks, provenance, balancing, Arrow files written).

ratio = baseline time / pack time, i.e. pack's tokens per second over the
baseline's (goal >= 0.8), from the medians of interleaved rounds. The HF
wrapper's `tokenizer(texts)` is timed too, for scale.

Peak memory: pack and raw each run in a fresh child process on the corpus
and on it repeated 4 times; each child reports its RSS once the tokenizer is
loaded, its peak RSS during the work (the kernel's high-water mark, reset
after start-up) and the growth between them. Pack streams, so its growth
should not scale with the corpus; raw holds every id.

    python bench/pack.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from moe_emergence.core.config import DataParams, PackParams  # noqa: E402
from moe_emergence.data.documents import make_table, write_docs  # noqa: E402
from moe_emergence.data.fetch import fetch_domain  # noqa: E402
from moe_emergence.data.pack import DOCS_PER_BATCH, run_pack  # noqa: E402
from moe_emergence.data.tokenizer import load_tokenizer  # noqa: E402


def build_corpus(out: Path, scale: int) -> tuple[int, int]:
    """Sampled-stage files of the embedded corpora, each document repeated `scale` times."""
    out.mkdir(parents=True, exist_ok=True)
    data = DataParams()
    n_docs = n_chars = 0
    for domain in data.sources:
        table, _, prov = fetch_domain(domain, data)
        rows = table.to_pylist()
        big = []
        for k in range(scale):
            for i, r in enumerate(rows):
                big.append({**r, "doc_id": f"{r['doc_id']}#{k}", "split": "eval" if i % 20 == 0 else "train"})
        write_docs(out / f"{domain}.parquet", make_table(big, prov, extra={"split": pa.string()}))
        n_docs += len(big)
        n_chars += sum(r["n_chars"] for r in big)
    return n_docs, n_chars


def read_texts(sampled: Path) -> list[str]:
    return [t for f in sorted(sampled.glob("*.parquet")) for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, sampled: Path, block: int) -> None:
    tok = load_tokenizer("embedded")
    tok.encode_batch(["warm up"])
    base = _status_mb("VmRSS")
    try:  # reset the peak so that imports do not mask the work's own peak (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    t0 = time.perf_counter()
    if mode == "pack":
        with tempfile.TemporaryDirectory() as d:
            run_pack(PackParams(block_size=block), sampled, Path(d) / "packed", Path(d) / "pack.json", tok=tok)
    else:
        ids = tok.encode_batch(read_texts(sampled))
        assert ids
    peak = _status_mb("VmHWM")
    print(json.dumps({"base_rss_mb": round(base, 1), "peak_rss_mb": round(peak, 1),
                      "growth_mb": round(peak - base, 1), "seconds": round(time.perf_counter() - t0, 3)}))


def measure_child(mode: str, sampled: Path, block: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--sampled", str(sampled), "--block", str(block)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--scale", type=int, default=8, help="corpus repeats for the memory comparison")
    parser.add_argument("--child", choices=["pack", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--sampled", type=Path, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        child(a.child, a.sampled, a.block)
        return

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        n_docs, n_chars = build_corpus(root / "x1", 1)
        tok = load_tokenizer("embedded")
        texts = read_texts(root / "x1")
        tok.encode_batch(texts[:200])  # warm-up
        raw_t, batched_t, pack_t, hf_t = [], [], [], []
        n_tokens = 0
        for r in range(a.rounds):
            t0 = time.perf_counter()
            ids = tok.encode_batch(texts)
            raw_t.append(time.perf_counter() - t0)
            n_tokens = sum(map(len, ids))
            del ids
            t0 = time.perf_counter()
            for i in range(0, len(texts), DOCS_PER_BATCH):
                tok.encode_batch(texts[i : i + DOCS_PER_BATCH])
            batched_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rep = run_pack(PackParams(block_size=a.block), root / "x1", root / f"packed{r}", root / f"pack{r}.json", tok=tok)
            pack_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tok.hf(texts)
            hf_t.append(time.perf_counter() - t0)
        raw, pack, hf = statistics.median(raw_t), statistics.median(pack_t), statistics.median(hf_t)
        batched = statistics.median(batched_t)
        packed_tokens = rep["train"]["domains"]
        del texts
        build_corpus(root / f"x{a.scale}", a.scale)
        mem = {f"{mode}_x{k}": measure_child(mode, root / f"x{k}", a.block)
               for k in (1, a.scale) for mode in ("pack", "raw")}
    result = {
        "docs": n_docs,
        "chars": n_chars,
        "tokens": n_tokens,
        "block_size": a.block,
        "rounds": a.rounds,
        "raw_encode_batch_s": round(raw, 3),
        "raw_batched_s": round(batched, 3),
        "pack_s": round(pack, 3),
        "hf_call_s": round(hf, 3),
        "raw_tokens_per_s": round(n_tokens / raw),
        "raw_batched_tokens_per_s": round(n_tokens / batched),
        "pack_tokens_per_s": round(n_tokens / pack),
        "ratio_pack_vs_raw": round(raw / pack, 3),
        "ratio_pack_vs_raw_batched": round(batched / pack, 3),
        "ratio_pack_vs_hf_call": round(hf / pack, 3),
        "all_rounds_s": {"raw": [round(x, 3) for x in raw_t], "raw_batched": [round(x, 3) for x in batched_t],
                         "pack": [round(x, 3) for x in pack_t]},
        "goal": 0.8,
        "memory_mb": mem,
        "train_blocks_per_domain_before_balance": {k: v["blocks"] for k, v in packed_tokens.items()},
        "cpus": os.cpu_count(),
    }
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"pack {result['pack_tokens_per_s']:,} tok/s vs raw {result['raw_tokens_per_s']:,} tok/s: "
              f"ratio {result['ratio_pack_vs_raw']} (vs 512-doc batches: {result['ratio_pack_vs_raw_batched']}; "
              f"goal 0.8); memory {mem}")


if __name__ == "__main__":
    main()
