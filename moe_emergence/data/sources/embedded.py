"""Offline corpora that the interpreter and installed packages ship.

- code: the running interpreter's standard library `.py` files (site-packages
  excluded). Files in a package directory share a group: the `encodings`
  codecs, generated from one template, are near-identical and must land on one
  side of the split together. Top-level modules and the flat `test/` directory
  are collections of independent modules, so there each file is its own group.
- math: word problems with worked solutions from `reasoning-gym` generators,
  seeded. The instruction sentence the generator appends for LLM evaluation and
  GSM8K's `#### <answer>` marker are format, not content, and are removed. A
  gsm_symbolic template is the group: its instances differ only in names and
  numbers.
- prose: gensim's English Wikipedia sample (markup stripped, cut into chunks
  of whole paragraphs, the article as group) and the Lee news corpus.
"""

from __future__ import annotations

import bz2
import re
import sys
import sysconfig
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moe_emergence.core.config import DataParams, EmbeddedSource
from moe_emergence.data.documents import RawDoc
from moe_emergence.core.errors import DataError
from moe_emergence.data.sources.wiki import chunk_paragraphs, strip_wiki_markup

# Generators of reasoning-gym the embedded math corpus knows how to clean (_INSTRUCTIONS below).
EMBEDDED_MATH_GENERATORS = (
    "gsm_symbolic", "basic_arithmetic", "chain_sum", "products", "gcd", "lcm", "prime_factorization",
)

# Directories of the stdlib that are not the interpreter's own source code.
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
# Generated, machine-specific build configuration dumps.
_SKIP_FILE = re.compile(r"^_sysconfigdata_.*\.py$")
# Directories whose files are unrelated modules side by side, grouped per file.
_FLAT_DIRS = {"", "test"}
_TEST_DIR = re.compile(r"^(tests?|idle_test)$|^test_")


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path, include_tests: bool) -> list[Path]:
    files = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        dirs = rel.parts[:-1]
        if any(d in _SKIP_DIRS or d.startswith("config-") for d in dirs) or _SKIP_FILE.match(p.name):
            continue
        if not include_tests and any(_TEST_DIR.match(d) for d in dirs):
            continue
        files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def code_source(src: EmbeddedSource) -> tuple[dict[str, Any], Iterator[RawDoc]]:
    root = _stdlib_root()
    if not root.is_dir():
        raise DataError(f"the interpreter's standard library was not found at {root}")
    prov = {
        "kind": "embedded",
        "source": "stdlib",
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "license": "PSF-2.0",
        "include_tests": src.include_tests,
    }

    def docs() -> Iterator[RawDoc]:
        for p in _stdlib_files(root, src.include_tests):
            rel = p.relative_to(root).as_posix()
            try:
                with tokenize.open(p) as f:  # honours PEP 263 encoding declarations
                    text = f.read()
            except (OSError, SyntaxError, UnicodeDecodeError):
                continue  # unreadable or deliberately mis-encoded test fixtures
            parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
            group = rel if parent in _FLAT_DIRS else parent + "/"
            yield RawDoc(f"stdlib/{rel}", f"stdlib/{group}", text, "stdlib", {"path": rel})

    return prov, docs()


# Instruction sentences each generator appends or prepends for LLM evaluation.
_INSTRUCTIONS: dict[str, list[str]] = {
    "gsm_symbolic": [r"\s*Give the result as your final answer\. Do not include units\.\s*$"],
    "basic_arithmetic": [],
    "chain_sum": [r"^State the final answer to the following arithmetic problem:\s*"],
    "products": [r"^Solve the following multiplication:\s*", r"\s*Give only the result as your final answer\.\s*$"],
    "gcd": [r"\s*Give only the GCD as your final answer\.\s*$"],
    "lcm": [r"\s*Give only the LCM as your final answer\.\s*$"],
    "prime_factorization": [r"\s*Write the factors separated by × \(Example:.*\)\s*$"],
}
_GSM_MARKER = re.compile(r"\s*####\s*[^\n]*\s*$")


def _math_text(gen: str, entry: dict[str, Any]) -> str:
    question = entry["question"]
    for pat in _INSTRUCTIONS.get(gen, []):
        question = re.sub(pat, "", question, flags=re.S)
    question = question.strip()
    meta = entry.get("metadata") or {}
    solution = meta.get("answer_cot")
    if solution:
        solution = _GSM_MARKER.sub("", solution).strip()
        return f"{question}\n\n{solution}"
    sep = " " if question.endswith("=") else "\n\n"
    return f"{question}{sep}{entry['answer']}"


def math_source(src: EmbeddedSource, seed: int) -> tuple[dict[str, Any], Iterator[RawDoc]]:
    try:
        import reasoning_gym
    except ImportError as e:
        raise DataError("the embedded math corpus needs the `reasoning-gym` package (pip install reasoning-gym)") from e
    unknown = [g for g in src.generators if g not in EMBEDDED_MATH_GENERATORS]
    if unknown or not src.generators:
        raise DataError(f"params.yaml: `data.sources.math.generators` must list generators among "
                        f"{', '.join(EMBEDDED_MATH_GENERATORS)}; got {src.generators}")
    prov = {
        "kind": "embedded",
        "source": "reasoning_gym",
        "generators": list(src.generators),
        "n_docs_per_generator": src.n_docs,
        "seed": seed,
        "version": getattr(reasoning_gym, "__version__", "unknown"),
    }

    def docs() -> Iterator[RawDoc]:
        for gi, gen in enumerate(src.generators):
            # One seed per generator, derived from the data seed, so adding a
            # generator does not change the problems of the others.
            ds = reasoning_gym.create_dataset(gen, size=src.n_docs, seed=seed * 1000 + gi)
            templates = getattr(ds, "task_indices", None)
            for i in range(src.n_docs):
                entry = ds[i]
                doc_id = f"{gen}/{i:06d}"
                group = f"{gen}/t{templates[i]:03d}" if templates is not None else doc_id
                origin = {"generator": gen, "index": i}
                if templates is not None:
                    origin["template"] = int(templates[i])
                yield RawDoc(doc_id, group, _math_text(gen, entry), f"reasoning_gym/{gen}", origin)

    return prov, docs()


_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_LEE_FILE = "lee_background.cor"


def prose_source(data: DataParams) -> tuple[dict[str, Any], Iterator[RawDoc]]:
    try:
        import gensim
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki
        from gensim.test.utils import datapath
    except ImportError as e:
        raise DataError("the embedded prose corpus needs the `gensim` package (pip install gensim)") from e
    wiki, lee = Path(datapath(_WIKI_FILE)), Path(datapath(_LEE_FILE))
    for p in (wiki, lee):
        if not p.exists():
            raise DataError(f"gensim's test data file {p} is missing; reinstall gensim or use another prose source")
    prov = {
        "kind": "embedded",
        "source": "gensim test_data",
        "gensim": gensim.__version__,
        "files": [_WIKI_FILE, _LEE_FILE],
        "license": "Wikipedia text: CC BY-SA; Lee corpus: research use (Lee, Pincombe & Welsh 2005)",
    }
    limit = data.max_chars - 1  # the length filter is strict: len < max_chars

    def docs() -> Iterator[RawDoc]:
        with bz2.open(wiki) as f:
            for title, text, pageid in extract_pages(f, filter_namespaces=("0",)):
                body = strip_wiki_markup(filter_wiki(text))
                for k, chunk in enumerate(chunk_paragraphs(body, limit)):
                    origin = {"file": _WIKI_FILE, "page_id": int(pageid), "title": title, "chunk": k}
                    yield RawDoc(f"enwiki/{pageid}/{k:03d}", f"enwiki/{pageid}", chunk, "enwiki", origin)
        with open(lee, encoding="utf-8") as f:
            for i, line in enumerate(f):
                origin = {"file": _LEE_FILE, "line": i + 1}
                yield RawDoc(f"lee/{i + 1:04d}", f"lee/{i + 1:04d}", line, "lee", origin)

    return prov, docs()
