"""Data stages: fetch -> split -> sample -> pack.

- `sources`: where documents come from (embedded corpora, Hugging Face, local files);
  `templates`: which record fields make a document.
- `documents`: the per-document table (columns, normalisation, content hash, Parquet IO).
- `fetch`: length filters, exact dedupe, provenance; `split`: train/eval by group with a
  leakage proof (`neardup` holds the MinHash check); `sample`: seeded budget per domain;
  `tokenizer` + `pack`: GPT-2 BPE into fixed uint16 blocks; `packed`: the file format and
  the loader every later stage uses; `artifacts` and `report`: formatting checks and the
  data report; `vocab`: the ids a model embeds. `core.errors.DataError` is the one
  exception for bad data input.
"""
