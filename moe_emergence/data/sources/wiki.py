"""Wikipedia markup clean-up and article chunking for the prose domain.

gensim's `filter_wiki` removes templates, links, references and tables but
leaves bold/italic quotes, section headings, list lines and the empty
parentheses where a template stood. What is left here is running text: the
article body up to its reference sections, paragraphs only.
"""

from __future__ import annotations

import re

# Sections after which a Wikipedia article is lists of links and citations.
_TRAILING_SECTIONS = {
    "see also", "references", "notes", "footnotes", "bibliography", "further reading",
    "external links", "sources", "citations", "works cited", "notes and references",
    "references and notes", "primary sources", "secondary sources", "gallery",
}
_HEADING = re.compile(r"^\s*(=+)\s*(.*?)\s*\1\s*$")
_LIST_OR_TABLE = re.compile(r"^\s*[*#;:|!{}]")
_QUOTES = re.compile(r"'{2,}")
_EMPTY_PARENS = re.compile(r"\(\s*[;,]?\s*\)")
_LEADING_PUNCT_PARENS = re.compile(r"\(\s*[;,]\s*")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([,.;:)])")
_SPACES = re.compile(r"[ \t]{2,}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPACE_LIKE = str.maketrans({"\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u200b": None, "\u200e": None})


def strip_wiki_markup(text: str) -> str:
    """Text of an article after gensim's `filter_wiki`, reduced to its prose paragraphs."""
    paragraphs: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    for line in text.split("\n"):
        m = _HEADING.match(line)
        if m:
            flush()
            if m.group(2).strip().lower() in _TRAILING_SECTIONS:
                break
            continue  # headings are markup, not prose
        if not line.strip():
            flush()
            continue
        if _LIST_OR_TABLE.match(line):
            flush()
            continue
        current.append(line.strip())
    flush()

    out = []
    for p in paragraphs:
        # `&nbsp;` entities become U+00A0: HTML layout, and a prose-only character
        # the router could key on; thin/zero-width spaces likewise.
        p = p.translate(_SPACE_LIKE)
        p = _QUOTES.sub("", p)
        p = _EMPTY_PARENS.sub("", p)
        p = _LEADING_PUNCT_PARENS.sub("(", p)
        p = _SPACES.sub(" ", p)
        p = _SPACE_BEFORE_PUNCT.sub(r"\1", p).strip()
        # Captions and stubs left by removed templates are short fragments, not prose.
        if len(p) >= 40 and not p.upper().startswith("#REDIRECT"):
            out.append(p)
    return "\n\n".join(out)


def _pieces(paragraph: str, limit: int) -> list[str]:
    """A paragraph longer than `limit` cut at sentence ends (hard cuts only if a sentence is longer)."""
    if len(paragraph) <= limit:
        return [paragraph]
    pieces: list[str] = []
    buf = ""
    for sent in _SENTENCE_END.split(paragraph):
        while len(sent) > limit:
            if buf:
                pieces.append(buf)
                buf = ""
            pieces.append(sent[:limit])
            sent = sent[limit:]
        if buf and len(buf) + 1 + len(sent) > limit:
            pieces.append(buf)
            buf = ""
        buf = f"{buf} {sent}" if buf else sent
    if buf:
        pieces.append(buf)
    return pieces


def chunk_paragraphs(text: str, limit: int) -> list[str]:
    """Greedy chunks of whole paragraphs, each at most `limit` characters."""
    chunks: list[str] = []
    buf = ""
    for para in text.split("\n\n"):
        for piece in _pieces(para.strip(), limit):
            if not piece:
                continue
            if buf and len(buf) + 2 + len(piece) > limit:
                chunks.append(buf)
                buf = ""
            buf = f"{buf}\n\n{piece}" if buf else piece
    if buf:
        chunks.append(buf)
    return chunks
