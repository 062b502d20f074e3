"""Online sources: Hugging Face datasets (streamed, seeded shuffle buffer) and zips by URL.

- Hub datasets (`codeparrot/codeparrot-clean`, `allenai/c4` en, `openai/gsm8k`
  main, `Salesforce/wikitext` wikitext-103-raw-v1, `Skylion007/openwebtext`, or
  a packaged builder such as `json` with `data_files`): streamed, shuffled with
  a seeded buffer so the sample is not the head of the stream, formatted with
  the source's template. Dataset id, config, split and revision are recorded.
  Remote code is never run: `datasets` loads data files only.
- A zip by URL (MathQA): downloaded once into `.cache/downloads/`, every member
  path checked before anything is extracted, `<split>.json` read as records.

With no network both fail with a DataError that names the embedded corpus as
the offline alternative.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from moe_emergence.core.atomic import atomic_path
from moe_emergence.core.config import HubSource
from moe_emergence.data.documents import RawDoc
from moe_emergence.core.errors import DataError
from moe_emergence.data.sources.wiki import chunk_paragraphs
from moe_emergence.core.hub import hub_unreachable
from moe_emergence.data.templates import render, strip_patterns

CACHE = Path(".cache")
# Builders that read local or remote data files rather than a hub repository.
_PACKAGED = {"json", "csv", "parquet", "text", "arrow"}


def _offline_hint(domain: str) -> str:
    return (
        f"No network? The offline alternative is the embedded corpus: set "
        f"data.sources.{domain}.kind: embedded in params.yaml."
    )


# ----------------------------------------------------------------------------- zip by URL


def download(url: str, domain: str, timeout: float = 60.0) -> Path:
    """The file at `url`, cached under .cache/downloads/<hash of url>/ (atomic, fetched once)."""
    name = PurePosixPath(urllib.request.urlparse(url).path).name or "download"
    dest = CACHE / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    if dest.exists():
        return dest
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp, open(tmp, "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(f"data.sources.{domain}.url: could not download {url} ({reason}). {_offline_hint(domain)}") from e
    return dest


def check_members(zf: zipfile.ZipFile, archive: Path) -> None:
    """Refuse an archive any of whose members would land outside the extraction directory."""
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        is_link = stat.S_ISLNK(info.external_attr >> 16)
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or is_link:
            raise DataError(
                f"{archive}: member {name!r} would extract outside the target directory "
                f"({'a symbolic link' if is_link else 'absolute or parent path'}); refusing this archive"
            )


def safe_extract(archive: Path, member_name: str, dest: Path) -> Path:
    """Extract one member (found by file name) after checking every member path."""
    try:
        with zipfile.ZipFile(archive) as zf:
            check_members(zf, archive)
            matches = [i for i in zf.infolist() if PurePosixPath(i.filename).name == member_name and not i.is_dir()]
            if len(matches) != 1:
                names = ", ".join(i.filename for i in zf.infolist() if not i.is_dir())
                raise DataError(f"{archive}: expected one member named {member_name!r}, found {len(matches)} (members: {names})")
            info = matches[0]
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise DataError(f"{archive}: member {info.filename!r} resolves outside {dest}; refusing this archive")
            with zf.open(info) as src, atomic_path(target) as tmp, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            return target
    except zipfile.BadZipFile as e:
        archive.unlink(missing_ok=True)  # a truncated download must not be taken as cached
        raise DataError(f"{archive}: not a valid zip archive ({e}; corrupt or truncated download, deleted: retry)") from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def zip_source(domain: str, src: HubSource) -> tuple[dict[str, Any], Iterator[RawDoc]]:
    assert src.url
    archive = download(src.url, domain)
    member = f"{src.split}.json"
    extracted = safe_extract(archive, member, archive.parent / "extracted")
    try:
        records = json.loads(extracted.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{extracted} (from {src.url}): not valid UTF-8 JSON ({e})") from e
    if not isinstance(records, list):
        raise DataError(f"{extracted} (from {src.url}): expected a JSON list of records")
    stem = PurePosixPath(urllib.request.urlparse(src.url).path).stem.lower() or "zip"
    prov = {
        "kind": "hf",
        "source": "zip",
        "url": src.url,
        "sha256": _sha256(archive),
        "member": member,
        "n_records": len(records),
        "template": src.template,
    }

    def docs() -> Iterator[RawDoc]:
        for i, rec in enumerate(records):
            where = f"{src.url} {member} record {i}"
            if not isinstance(rec, dict):
                raise DataError(f"{where}: expected an object with named fields")
            text = strip_patterns(render(src.template, rec, where), src.strip_patterns)
            doc_id = f"{stem}/{src.split}/{i:06d}"
            group = str(rec[src.group_field]) if src.group_field and rec.get(src.group_field) is not None else doc_id
            yield RawDoc(doc_id, group, text, stem, {"url": src.url, "member": member, "record": i})

    return prov, docs()


# ----------------------------------------------------------------------------- Hugging Face datasets


def _resolve_revision(src: HubSource) -> str | None:
    """The commit a hub dataset's requested revision (a branch, a tag, none: main) points to now;
    the pinned revision as given offline, None offline without one or for packaged builders."""
    if src.dataset in _PACKAGED:
        return src.revision
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(src.dataset, revision=src.revision, timeout=20).sha
    except Exception:  # offline or private: the requested revision is what there is to record
        return src.revision


def _wikitext_articles(rows: Iterator[dict[str, Any]], limit: int) -> Iterator[tuple[int, str]]:
    """WikiText rows are lines; top-level ` = Title = ` lines start an article."""
    title = re.compile(r"^ = [^=].* = $")
    heading = re.compile(r"^ =( =)+ .* =( =)+ $")
    article: list[str] = []
    n = -1

    def flush() -> Iterator[tuple[int, str]]:
        body = "\n\n".join(article)
        for chunk in chunk_paragraphs(body, limit):
            yield n, chunk

    for row in rows:
        line = str(row.get("text") or "").rstrip("\n")
        if title.match(line):
            if n >= 0:
                yield from flush()
            n += 1
            article = []
        elif line.strip() and not heading.match(line) and n >= 0:
            article.append(line.strip())
    if n >= 0:
        yield from flush()


def datasets_source(domain: str, src: HubSource, seed: int, max_chars: int) -> tuple[dict[str, Any], Iterator[RawDoc]]:
    try:
        import datasets
    except ImportError as e:
        raise DataError("Hugging Face sources need the `datasets` package (pip install datasets)") from e
    kwargs: dict[str, Any] = {
        "path": src.dataset,
        "name": src.config,
        "split": src.split,
        "streaming": src.streaming,
        "cache_dir": str(CACHE / "hf" / "datasets"),
    }
    reason = hub_unreachable() if src.dataset not in _PACKAGED else None
    # resolved once, then loaded and recorded: the data cannot move between the lookup and the load
    revision = src.revision if reason else _resolve_revision(src)
    if revision:
        kwargs["revision"] = revision
    if src.data_files:
        kwargs["data_files"] = src.data_files
    where = f"data.sources.{domain}: Hugging Face dataset {src.dataset!r}" + (f" ({src.config})" if src.config else "")

    def fail(e: Exception) -> DataError:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return DataError(f"{where}: could not load split {src.split!r}: {type(e).__name__}: {first}. {_offline_hint(domain)}")

    try:
        if reason:  # fail now rather than after the hub client's retries
            raise ConnectionError(reason)
        ds = datasets.load_dataset(**kwargs)
    except DataError:
        raise
    except Exception as e:  # connection, offline mode, missing dataset or config: all one message
        raise fail(e) from e
    shuffled = src.documents == "rows"
    if shuffled:
        ds = ds.shuffle(seed=seed, buffer_size=src.shuffle_buffer) if src.streaming else ds.shuffle(seed=seed)
    prov = {
        "kind": "hf",
        "dataset": src.dataset,
        "config": src.config,
        "split": src.split,
        "revision": revision,
        "requested_revision": src.revision,
        "data_files": src.data_files,
        "streaming": src.streaming,
        "shuffle": {"seed": seed, "buffer_size": src.shuffle_buffer} if shuffled else None,
        "documents": src.documents,
        "template": src.template,
        "datasets": datasets.__version__,
    }
    base = src.dataset.rstrip("/").split("/")[-1] if src.dataset not in _PACKAGED else src.dataset

    def rows() -> Iterator[dict[str, Any]]:
        it = iter(ds)
        while True:
            try:
                row = next(it)
            except StopIteration:
                return
            except Exception as e:  # streaming fetches lazily: network errors surface here
                raise fail(e) from e
            yield row

    def docs() -> Iterator[RawDoc]:
        if src.documents == "wikitext_articles":
            k_prev, k = -1, 0
            for art, chunk in _wikitext_articles(rows(), max_chars - 1):
                k = k + 1 if art == k_prev else 0
                k_prev = art
                doc_id = f"{base}/{src.split}/{art:06d}/{k:03d}"
                yield RawDoc(doc_id, f"{base}/{src.split}/{art:06d}", chunk, base,
                             {"dataset": src.dataset, "article": art, "chunk": k})
            return
        for i, row in enumerate(rows()):
            loc = f"{where} row {i} of the shuffled stream"
            text = strip_patterns(render(src.template, row, loc), src.strip_patterns)
            doc_id = f"{base}/{src.split}/{i:07d}"
            group = doc_id
            if src.group_field:
                if row.get(src.group_field) is None:
                    raise DataError(f"{loc} has no field {src.group_field!r} (data.sources.{domain}.group_field)")
                group = f"{base}/{row[src.group_field]}"
            yield RawDoc(doc_id, group, text, base, {"dataset": src.dataset, "position": i})

    return prov, docs()


def hub_source(domain: str, src: HubSource, seed: int, max_chars: int) -> tuple[dict[str, Any], Iterator[RawDoc]]:
    if src.url:
        return zip_source(domain, src)
    return datasets_source(domain, src, seed, max_chars)
