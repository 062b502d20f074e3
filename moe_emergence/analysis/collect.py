"""Model forwards that feed the analysis: routing of packed blocks and documents, knockout losses.

Every function here runs a model in eval mode under `no_grad`, in batches, and
returns plain numpy arrays; the metrics live in the sibling modules. Routing
passes stop at the transformer's hidden states: the LM head (most of a CPU
forward with GPT-2's 50k-token vocabulary) runs only where a loss is needed,
in the knockout.

Per-token arrays are flattened row-major over [blocks, block_size], the order
in which a MoE layer's router output lists its N = B*T tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from moe_emergence.analysis.perturb import perturbation_pairs
from moe_emergence.analysis.token_types import bpe_token_types, char_types
from moe_emergence.core.progress import progress as show_progress
from moe_emergence.data.packed import PackedData
from moe_emergence.model.gpt2 import latest_routing, moe_layers
from moe_emergence.model.lm_loss import model_sequence_losses, token_losses
from moe_emergence.model.losses import load_balance_loss, z_loss
from moe_emergence.model.moe import MoELayer


def group_by_domain(per_seq: np.ndarray, domain_codes: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Mean of per-block values by the blocks' domain codes."""
    return {n: float(per_seq[domain_codes == c].mean()) for c, n in enumerate(names) if (domain_codes == c).any()}

# --------------------------------------------------------------------------- tokens and provenance


@dataclass
class TokenTable:
    """Packed blocks with the provenance of every token, flattened row-major over [B, T].

    `doc` codes index `doc_ids` (the packed document ids) and are unique across
    domains; `position` is the token's index within its document, so tokens p
    and p+1 of one document are adjacent in the text whichever block holds them.
    `group` codes index `group_ids`: the unit the split kept on one side (a
    template, a package, an article), the unit the analysis resamples.
    `ids` are tokenizer (GPT-2) ids, the ones token identity speaks of;
    `model_ids` the same tokens in the model's vocabulary.
    """

    ids: np.ndarray  # [B, T] int64 token ids
    rows: np.ndarray  # [B] row of each block in the packed file
    block_domain: np.ndarray  # [B] domain codes
    domain: np.ndarray  # [N] domain codes
    doc: np.ndarray  # [N] document codes
    position: np.ndarray  # [N] index of the token within its document
    doc_ids: np.ndarray  # [n_docs] str
    doc_domain: np.ndarray  # [n_docs] domain codes
    domain_names: list[str]
    group: np.ndarray  # [N] group codes
    group_ids: np.ndarray  # [n_groups] str
    model_ids: np.ndarray  # [B, T] int64 ids in the model's vocabulary

    @property
    def n_tokens(self) -> int:
        return int(self.ids.size)

    @property
    def token_id(self) -> np.ndarray:
        return self.ids.reshape(-1)

    @property
    def segment(self) -> np.ndarray:
        """[N] id of the (block, document) stretch a token is in: pairs within one were seen in one context."""
        b, t = self.ids.shape
        return np.repeat(np.arange(b, dtype=np.int64), t) * max(len(self.doc_ids), 1) + self.doc


def domain_codes(names: Sequence[str], domain_names: Sequence[str], where: str) -> np.ndarray:
    """Integer codes of domain labels into `domain_names`; an unknown domain is an error."""
    index = {d: i for i, d in enumerate(domain_names)}
    unknown = sorted({str(n) for n in names} - set(index))
    if unknown:
        raise ValueError(
            f"{where}: blocks of domain(s) {unknown} that the train split does not have "
            f"({', '.join(domain_names)}); re-run `dvc repro pack`"
        )
    return np.array([index[str(n)] for n in names], dtype=np.int64)


def select_blocks(
    block_domain: np.ndarray, n: int, seed: int, *, per_domain: bool = False
) -> np.ndarray:
    """Sorted rows of at most `n` blocks, seeded; all of them when `n` is 0 or covers them.

    per_domain: about n / |D| blocks of each domain (fewer where a domain has
    fewer), so every domain is measured alike; otherwise a uniform sample.
    """
    block_domain = np.asarray(block_domain)
    total = len(block_domain)
    if n <= 0 or n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    if not per_domain:
        return np.sort(rng.choice(total, size=n, replace=False))
    doms = np.unique(block_domain)
    k = max(1, n // len(doms))
    picks = []
    for d in doms:
        rows = np.flatnonzero(block_domain == d)
        picks.append(rng.choice(rows, size=min(k, len(rows)), replace=False))
    return np.sort(np.concatenate(picks))


def token_table(
    packed: PackedData, rows: np.ndarray, domain_names: Sequence[str], doc_groups: Mapping[str, str],
    encode: Any = None, where: str = "",
) -> TokenTable:
    """The blocks `rows` of a packed file with each token's domain, document, group and position.

    `doc_groups` maps packed document ids to their group ids (from the sampled
    documents); `encode` maps tokenizer ids to model ids (identity when None).
    """
    rows = np.asarray(rows, dtype=np.int64)
    names = list(domain_names)
    n_dom = len(names)
    ids = np.asarray(packed.ids[rows], dtype=np.int64)
    b, t = ids.shape
    block_domain = domain_codes(packed.domains[rows], names, where or "packed file")
    take = pa.array(rows, type=pa.int64())
    doc_col = packed.table.column("doc_ids").take(take).combine_chunks()
    start_col = packed.table.column("doc_starts").take(take).combine_chunks()
    first_off = packed.table.column("first_doc_offset").take(take).to_numpy().astype(np.int64)
    counts = doc_col.value_lengths().to_numpy().astype(np.int64)  # documents per block
    entry_names = np.asarray(doc_col.flatten().to_pylist(), dtype=object)
    entry_start = start_col.flatten().to_numpy().astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    entry_block = np.repeat(np.arange(b), counts)
    entry_rank = np.arange(len(entry_names)) - offsets[entry_block]
    # A document boundary inside a block bumps the local document index from there on.
    marks = np.zeros((b, t + 1), dtype=np.int64)
    later = entry_rank > 0
    np.add.at(marks, (entry_block[later], entry_start[later]), 1)
    local = np.cumsum(marks[:, :t], axis=1)  # [B, T] index of the token's document in its block
    entry = offsets[:-1, None] + local  # [B, T] index into the entries
    tpos = np.arange(t)[None, :]
    position = np.where(local == 0, first_off[:, None] + tpos, tpos - entry_start[entry])
    # Document codes: unique over (domain, packed id).
    _, name_code = np.unique(entry_names.astype(str), return_inverse=True)
    key = name_code.astype(np.int64) * n_dom + block_domain[entry_block]
    uniq, first_entry, entry_doc = np.unique(key, return_index=True, return_inverse=True)
    doc_names = entry_names[first_entry].astype(str)
    missing = [d for d in doc_names if d not in doc_groups]
    if missing:
        raise ValueError(
            f"{where or 'packed file'}: document {missing[0]!r} is not among the sampled documents; "
            "data/packed and data/sampled come from different runs: run `dvc repro pack`"
        )
    doc_domain = uniq % n_dom
    # groups are domain-pure by construction: the domain is part of the key
    gkeys = np.array([f"{names[int(dd)]}:{doc_groups[d]}" for d, dd in zip(doc_names, doc_domain, strict=True)])
    group_ids, doc_group = np.unique(gkeys, return_inverse=True)
    doc = entry_doc[entry].reshape(-1).astype(np.int64)
    return TokenTable(
        ids=ids,
        rows=rows,
        block_domain=block_domain,
        domain=np.repeat(block_domain, t),
        doc=doc,
        position=position.reshape(-1).astype(np.int64),
        doc_ids=doc_names,
        doc_domain=doc_domain,
        domain_names=names,
        group=doc_group[doc].astype(np.int64),
        group_ids=group_ids,
        model_ids=ids if encode is None else np.asarray(encode(ids), dtype=np.int64),
    )


# --------------------------------------------------------------------------- routing


@dataclass
class Routed:
    """Per MoE block: the experts of every token [N, k] (top-1 first), and the load-balance and
    z values over all tokens; per sequence LM loss [B] when asked for."""

    experts: dict[int, np.ndarray]
    lb: dict[int, float] = field(default_factory=dict)
    z: dict[int, float] = field(default_factory=dict)
    loss: np.ndarray | None = None

    def top1(self, block: int) -> np.ndarray:
        return self.experts[block][:, 0].astype(np.int64)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def route(
    model: torch.nn.Module, ids: np.ndarray, batch_size: int, *, lm_loss: bool = False
) -> Routed:
    """Route token blocks [B, T] through a MoE model (eval mode); see `Routed`.

    Without `lm_loss` only the transformer runs (no LM head).
    """
    was_training = model.training
    model.eval()
    device = model_device(model)
    layers = moe_layers(model)
    experts: dict[int, list[np.ndarray]] = {i: [] for i, _ in layers}
    counts = {i: torch.zeros(layer.n_experts, dtype=torch.float64) for i, layer in layers}
    probs = {i: torch.zeros(layer.n_experts, dtype=torch.float64) for i, layer in layers}
    zsum = dict.fromkeys(counts, 0.0)
    losses = []
    n = 0
    try:
        starts = range(0, len(ids), batch_size)
        for start in show_progress(starts, f"route ({len(ids)} blocks)", total=len(starts), unit="batch"):
            x = torch.from_numpy(np.asarray(ids[start : start + batch_size], dtype=np.int64)).to(device)
            if lm_loss:
                losses.append(model_sequence_losses(model, x).double().cpu().numpy())
            else:
                model.transformer(input_ids=x)
            routing = latest_routing(model)
            for i, _ in layers:
                r = routing[i]
                experts[i].append(r.expert_idx.to(torch.int16).cpu().numpy())
                counts[i] += r.counts.double().cpu()
                probs[i] += r.probs.double().sum(0).cpu()
                zsum[i] += float(z_loss(r.logits)) * r.logits.shape[0]
            n += x.numel()
    finally:
        model.train(was_training)
    out = Routed(
        experts={
            i: np.concatenate(v) if v else np.zeros((0, 1), np.int16) for i, v in experts.items()
        }
    )
    for i, layer in layers:
        if n:
            routable = int(layer.active.sum())
            out.lb[i] = float(
                load_balance_loss(
                    (probs[i] / n)[None], torch.empty(0, 1, dtype=torch.long), routable, counts[i]
                )
            )
            out.z[i] = zsum[i] / n
    if lm_loss:
        out.loss = np.concatenate(losses) if losses else np.zeros(0)
    return out


@contextlib.contextmanager
def expert_disabled(layer: MoELayer, expert: int) -> Iterator[None]:
    """Route as if `expert` did not exist: its tokens go to their next choice.

    The mask is handed to the router directly (a pre-forward hook), because a
    MoE layer without ghost experts skips its `active` mask for speed; the
    layer is left exactly as it was on exit.
    """
    keep = layer.active.clone()
    keep[expert] = False

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if len(args) >= 4:
            args = (*args[:3], keep, *args[4:])
        else:
            kwargs = {**kwargs, "active": keep}
        return args, kwargs

    handle = layer.router.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def final_hidden(model: torch.nn.Module, ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """The transformer's output (after the final layer norm) for token blocks [B, T]: [B, T, d]."""
    device = model_device(model)
    out = []
    for start in range(0, len(ids), batch_size):
        x = torch.from_numpy(np.asarray(ids[start : start + batch_size], dtype=np.int64)).to(device)
        out.append(model.transformer(input_ids=x).last_hidden_state)
    return torch.cat(out)


@torch.no_grad()
def next_token_loss(
    model: torch.nn.Module, hidden: torch.Tensor, ids: torch.Tensor, where: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of predicting token t+1 from position t, at the positions `where` [B, T-1] (bool).

    Returns a flat [M] tensor in row-major order of `where`. Averaged over every
    position of a block it is the block's `sequence_lm_loss`; computing it in
    chunks of positions keeps the [positions, vocab] logits small.
    """
    b, t, d = hidden.shape
    rows, cols = torch.nonzero(where, as_tuple=True)
    h = hidden[:, :-1][rows, cols]  # [M, d]
    target = ids[:, 1:][rows, cols]
    return token_losses(h, model.lm_head.weight, target)


def knockout_losses(
    model: torch.nn.Module,
    ids: np.ndarray,
    block_domain: np.ndarray,
    domain_names: Sequence[str],
    batch_size: int,
    progress: Any = None,
) -> tuple[dict[str, float], dict[tuple[int, int], dict[str, float]]]:
    """Per-domain eval LM loss of the intact model and with each routable expert of each MoE layer disabled.

    Returns (base {domain: loss}, knocked {(layer, expert): {domain: loss}}).
    Disabling an expert changes the final hidden state of only some
    positions (exactly: the others run the same arithmetic), so the LM head,
    most of the cost, runs again only where the hidden state changed.
    """
    was_training = model.training
    model.eval()
    names = list(domain_names)
    x = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(model_device(model))
    every = torch.ones(x.shape[0], x.shape[1] - 1, dtype=torch.bool, device=x.device)
    try:
        h_base = final_hidden(model, ids, batch_size)
        ce_base = next_token_loss(model, h_base, x, every).view_as(every)
        base = group_by_domain(ce_base.double().mean(1).cpu().numpy(), block_domain, names)
        knocked: dict[tuple[int, int], dict[str, float]] = {}
        pairs = [(i, layer, int(e)) for i, layer in moe_layers(model)
                 for e in np.flatnonzero(layer.active.cpu().numpy())]
        for i, layer, e in show_progress(pairs, f"knockout ({len(ids)} blocks)", total=len(pairs), unit="expert"):
            with expert_disabled(layer, e):
                h = final_hidden(model, ids, batch_size)
            changed = (h[:, :-1] != h_base[:, :-1]).any(-1)
            ce = ce_base.clone()
            ce[changed] = next_token_loss(model, h, x, changed)
            knocked[(i, e)] = group_by_domain(ce.double().mean(1).cpu().numpy(), block_domain, names)
        if progress:
            progress(f"knockout: {len(pairs)} experts in {len({i for i, _, _ in pairs})} MoE layers")
    finally:
        model.train(was_training)
    return base, knocked


# --------------------------------------------------------------------------- documents


class Encoder:
    """Token ids and character offsets exactly as the pack stage tokenizes (special tokens as text)."""

    def __init__(self, tokenizer: Any):
        self.backend = (
            tokenizer.hf.backend_tokenizer
            if hasattr(tokenizer, "hf")
            else tokenizer.backend_tokenizer
        )

    def __call__(self, text: str, return_offsets_mapping: bool = True) -> dict[str, list]:
        self.backend.encode_special_tokens = True
        enc = self.backend.encode(text, add_special_tokens=False)
        return {"input_ids": enc.ids, "offset_mapping": enc.offsets}


def code_token_types(
    encoder: Encoder, texts: Mapping[str, str], table: TokenTable, domain: int
) -> tuple[np.ndarray, dict[str, int]]:
    """Python token type (index into token_types.TOKEN_TYPES) of every token of `table` in `domain`.

    Each document is re-tokenized from its text with offsets; tokens of other
    domains, end-of-document tokens and documents whose text is missing or
    whose tokens differ from the packed ones get -1. Returns the types [N] and
    counts {docs, partial (tokenize stopped early), unmatched}.
    """
    types = np.full(table.n_tokens, -1, dtype=np.int64)
    docs = np.flatnonzero(table.doc_domain == domain)
    per_doc_types, per_doc_ids, lengths = [], [], np.zeros(len(table.doc_ids), dtype=np.int64)
    stats = {"docs": 0, "partial": 0, "unmatched": 0}
    starts = np.zeros(len(table.doc_ids), dtype=np.int64)
    cursor = 0
    for d in docs:
        text = texts.get(str(table.doc_ids[d]))
        if text is None:
            stats["unmatched"] += 1
            continue
        enc = encoder(text)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        ct = char_types(text)
        per_doc_types.append(
            bpe_token_types(ct.labels, np.asarray(enc["offset_mapping"]).reshape(-1, 2))
        )
        per_doc_ids.append(ids)
        starts[d], lengths[d] = cursor, len(ids)
        cursor += len(ids)
        stats["docs"] += 1
        stats["partial"] += int(not ct.complete)
    if not per_doc_types:
        return types, stats
    all_types, all_ids = np.concatenate(per_doc_types), np.concatenate(per_doc_ids)
    sel = np.flatnonzero(table.domain == domain)
    doc, pos = table.doc[sel], table.position[sel]
    inside = pos < lengths[doc]
    where = np.where(inside, starts[doc] + pos, 0)
    same = inside & (all_ids[where] == table.token_id[sel])
    bad_docs = np.unique(doc[inside & ~same])
    stats["unmatched"] += len(bad_docs)
    ok = same & ~np.isin(doc, bad_docs)
    types[sel[ok]] = all_types[where[ok]]
    return types, stats


@dataclass
class FormatPlan:
    """Documents and their format-perturbed copies as padded sequences of model ids [S, L], and
    for each perturbation the flat indices (into S * L) of the matched content tokens."""

    ids: np.ndarray
    original: dict[str, np.ndarray]  # kind -> [M] flat indices in the original sequences
    perturbed: dict[str, np.ndarray]  # kind -> [M] flat indices of the same tokens, perturbed
    domain: dict[str, np.ndarray]  # kind -> [M] domain codes
    coverage: dict[str, float]  # kind -> matched / content tokens

    def agreements(self, top1: np.ndarray, n_experts: int, domains: Sequence[str]) -> dict[str, dict]:
        """Per perturbation: top-1 agreement of the matched tokens (overall and per domain), given
        the top-1 expert of every position of `ids`, flattened [S * L]."""
        from moe_emergence.analysis.agreement import routing_agreement

        return {kind: routing_agreement(top1[self.original[kind]], top1[self.perturbed[kind]], n_experts,
                                        groups=self.domain[kind], group_names=list(domains))
                for kind in self.original if len(self.original[kind])}


def format_plan(
    encoder: Encoder, docs: Sequence[tuple[int, str]], kinds: Sequence[str], prefix: str, max_tokens: int,
    pad_id: int, encode: Any = None,
) -> FormatPlan:
    """Tokenize each document and its format-perturbed copies; locate the unchanged content tokens.

    Sequences are padded on the right to a common length: attention is causal,
    so padding never changes the routing of the tokens before it.
    """
    seqs: list[np.ndarray] = []
    plan: list[tuple[int, str, int, int, np.ndarray, np.ndarray]] = []  # (domain, kind, orig, pert, oi, pi)
    content: dict[str, int] = dict.fromkeys(kinds, 0)
    matched: dict[str, int] = dict.fromkeys(kinds, 0)
    for dom, text in docs:
        pairs = perturbation_pairs(encoder, text, kinds, prefix=prefix, max_tokens=max_tokens)
        if not pairs or len(pairs[0].orig_ids) == 0:
            continue
        so = len(seqs)
        seqs.append(pairs[0].orig_ids)
        for p in pairs:
            plan.append((dom, p.kind, so, len(seqs), p.orig_index, p.pert_index))
            seqs.append(p.pert_ids)
            content[p.kind] += p.n_content
            matched[p.kind] += len(p.orig_index)
    length = max((len(s) for s in seqs), default=1)
    ids = np.full((len(seqs), length), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    if encode is not None:
        ids = np.asarray(encode(ids), dtype=np.int64)
    out = FormatPlan(ids, {}, {}, {}, {k: matched[k] / content[k] if content[k] else float("nan") for k in kinds})
    for kind in kinds:
        rows = [p for p in plan if p[1] == kind]
        empty = np.zeros(0, np.int64)
        out.original[kind] = np.concatenate([p[2] * length + p[4] for p in rows]) if rows else empty
        out.perturbed[kind] = np.concatenate([p[3] * length + p[5] for p in rows]) if rows else empty
        out.domain[kind] = np.concatenate([np.full(len(p[4]), p[0]) for p in rows]) if rows else empty
    return out


@torch.no_grad()
def mlp_inputs(model: torch.nn.Module, ids: np.ndarray, blocks: Sequence[int], batch_size: int) -> dict[int, torch.Tensor]:
    """The `ln_2` outputs (what an MLP or a router sees) of `blocks` for [B, T] ids, flattened [B*T, d]."""
    from moe_emergence.model.gpt2 import mlp_inputs as one_batch

    parts: dict[int, list[torch.Tensor]] = {b: [] for b in blocks}
    for s in range(0, len(ids), batch_size):
        for b, h in one_batch(model, torch.from_numpy(np.asarray(ids[s : s + batch_size], dtype=np.int64)),
                              list(blocks)).items():
            parts[b].append(h)
    return {b: torch.cat(v) for b, v in parts.items()}
