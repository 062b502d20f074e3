"""One typed params object, validated once from `params.yaml` and passed down.

Every section of `params.yaml` maps onto a dataclass here. `load_params` checks
unknown keys, types and ranges before any stage does work, and raises
`ParamsError` with the dotted key at fault and what to do about it.

Numbers are cast on the way in: `dvc exp run -S model.lb_coef=0` writes an int
where a float is expected, and PyYAML reads `1e-4` (no dot) as a string.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DOMAINS = ("code", "math", "prose")


class ParamsError(ValueError):
    """A parameter in params.yaml is unknown, ill-typed or out of range."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ParamsError(f"params.yaml: `{key}` {msg}")


# --------------------------------------------------------------------------- data


# Generators of reasoning-gym the embedded math corpus knows how to clean.
EMBEDDED_MATH_GENERATORS = (
    "gsm_symbolic", "basic_arithmetic", "chain_sum", "products", "gcd", "lcm", "prime_factorization",
)


@dataclass
class SourceParams:
    """Where one domain's documents come from.

    kind=embedded: offline corpora shipped with the interpreter or installed
    packages. kind=hf: a Hugging Face hub dataset, or a zip of JSON records by
    `url` (MathQA). kind=local: files on disk, by path or glob. hf and local
    documents are built from record fields with `template`.
    """

    kind: Literal["embedded", "hf", "local"] = "embedded"
    # embedded code: include the standard library's test packages
    include_tests: bool = True
    # embedded math: reasoning-gym generators, `n_docs` problems from each
    generators: list[str] = field(default_factory=lambda: ["gsm_symbolic"])
    n_docs: int = 4000
    # hf
    dataset: str = ""
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    data_files: str | None = None
    streaming: bool = True
    shuffle_buffer: int = 10000
    url: str | None = None
    # `rows`: one record, one document; `wikitext_articles`: WikiText lines joined into
    # articles (the group) and chunked like the embedded prose
    documents: Literal["rows", "wikitext_articles"] = "rows"
    # local
    path: str = ""
    format: Literal["auto", "json", "jsonl", "parquet", "csv", "txt"] = "auto"
    # hf and local: which fields make the text, e.g. "{question}\n\n{answer}"
    template: str = "{text}"
    group_field: str | None = None
    # regular expressions removed from each formatted text (e.g. GSM8K's "<<48/2=24>>")
    strip_patterns: list[str] = field(default_factory=list)
    # every kind: stop after this many documents kept by the filters and dedupe
    max_docs: int = 200000

    def validate(self, key: str) -> None:
        from moe_emergence.data.templates import template_fields

        _check(self.max_docs >= 1, f"{key}.max_docs", f"must be >= 1, got {self.max_docs}")
        if self.kind in ("hf", "local"):
            try:
                template_fields(self.template)
            except ValueError as e:
                raise ParamsError(f"params.yaml: `{key}.template` is invalid: {e}") from None
        for i, pat in enumerate(self.strip_patterns):
            try:
                re.compile(pat)
            except re.error as e:
                raise ParamsError(f"params.yaml: `{key}.strip_patterns[{i}]` is not a regular expression: {e}") from None


@dataclass
class DataParams:
    seed: int = 0
    sources: dict[str, SourceParams] = field(
        default_factory=lambda: {d: SourceParams() for d in DOMAINS}
    )
    # Length filters on characters, strict inequalities as in the reference.
    min_chars: dict[str, int] = field(
        default_factory=lambda: {"code": 100, "math": 0, "prose": 200}
    )
    max_chars: int = 10000

    def validate(self, key: str) -> None:
        _check(len(self.sources) > 0, f"{key}.sources", "must name at least one domain")
        for dom in self.sources:
            _check(
                dom.isidentifier() and dom.islower(),
                f"{key}.sources.{dom}",
                "domain names must be lower-case identifiers (they become metric names)",
            )
            src = self.sources[dom]
            sk = f"{key}.sources.{dom}"
            if src.kind == "embedded":
                _check(
                    dom in DOMAINS,
                    f"{sk}.kind",
                    f"is 'embedded' but there is no embedded corpus for domain {dom!r} "
                    f"(embedded domains: {', '.join(DOMAINS)}); use kind 'local' or 'hf'",
                )
                _check(src.n_docs > 0, f"{sk}.n_docs", f"must be > 0, got {src.n_docs}")
                if dom == "math":
                    bad = [g for g in src.generators if g not in EMBEDDED_MATH_GENERATORS]
                    _check(
                        not bad and len(src.generators) > 0,
                        f"{sk}.generators",
                        f"must list generators among {', '.join(EMBEDDED_MATH_GENERATORS)}; got {src.generators}",
                    )
            elif src.kind == "hf":
                _check(bool(src.dataset) or bool(src.url), f"{sk}.dataset", "is required when kind is 'hf'")
                _check(src.shuffle_buffer >= 1, f"{sk}.shuffle_buffer", "must be >= 1")
            elif src.kind == "local":
                _check(bool(src.path), f"{sk}.path", "is required when kind is 'local'")
        for dom, v in self.min_chars.items():
            _check(dom in self.sources, f"{key}.min_chars.{dom}", f"names a domain not in {key}.sources")
            _check(v >= 0, f"{key}.min_chars.{dom}", f"must be >= 0, got {v}")
        _check(self.max_chars > 0, f"{key}.max_chars", f"must be > 0, got {self.max_chars}")


@dataclass
class SplitParams:
    seed: int = 0
    # Eval size in documents, after the reference rule: whole groups whose hash of
    # (seed, group id) falls below eval_fraction go to eval, then eval is topped up
    # (in hash order) to min(max(eval_min, floor(eval_fraction * n)),
    # floor(eval_max_fraction * n)) documents, or cut to that cap.
    # `eval_count` asks for an explicit number of eval documents instead.
    eval_fraction: float = 0.05
    eval_min: int = 10
    eval_max_fraction: float = 0.10
    eval_count: int | None = None
    # Eval holds at least this many groups (documents of one template, package, article):
    # the analysis resamples groups, so their number bounds what an interval can say.
    eval_min_groups: int = 12
    # Near-duplicate check: MinHash over shingles of `shingle_size` word/symbol tokens;
    # an eval document whose estimated Jaccard similarity to a train document reaches
    # the threshold is dropped.
    near_dup_threshold: float = 0.8
    shingle_size: int = 5
    num_perm: int = 128

    def validate(self, key: str) -> None:
        _check(0 < self.eval_fraction < 1, f"{key}.eval_fraction", f"must be in (0, 1), got {self.eval_fraction}")
        _check(self.eval_min >= 0, f"{key}.eval_min", "must be >= 0")
        _check(
            self.eval_fraction <= self.eval_max_fraction < 1,
            f"{key}.eval_max_fraction",
            f"must be in [eval_fraction, 1), got {self.eval_max_fraction}",
        )
        if self.eval_count is not None:
            _check(self.eval_count >= 1, f"{key}.eval_count", "must be >= 1 or null")
        _check(self.eval_min_groups >= 0, f"{key}.eval_min_groups", "must be >= 0")
        _check(0 < self.near_dup_threshold <= 1, f"{key}.near_dup_threshold", "must be in (0, 1]")
        _check(self.shingle_size >= 1, f"{key}.shingle_size", "must be >= 1")
        _check(self.num_perm >= 16, f"{key}.num_perm", "must be >= 16")


@dataclass
class SampleParams:
    seed: int = 0
    # Characters per domain (size_mb * 2**20 Python characters), train and eval
    # together as in the reference; eval keeps its share of the split.
    size_mb: float = 1.0
    # What to do when a domain has fewer characters than the budget.
    on_short: Literal["error", "warn"] = "error"
    # Eval documents are taken one per group in turn until the budget is spent and at
    # least this many groups are in (see data/sample.py).
    eval_min_groups: int = 12
    # At most this many characters of eval per domain (its share of size_mb otherwise).
    eval_max_mb: float = 1.0

    def validate(self, key: str) -> None:
        _check(self.eval_max_mb > 0, f"{key}.eval_max_mb", f"must be > 0, got {self.eval_max_mb}")
        _check(self.size_mb > 0, f"{key}.size_mb", f"must be > 0, got {self.size_mb}")
        _check(self.eval_min_groups >= 0, f"{key}.eval_min_groups", "must be >= 0")


@dataclass
class PackParams:
    seed: int = 0
    tokenizer: Literal["embedded", "gpt2"] = "embedded"
    block_size: int = 128
    balance_train: bool = True
    imbalance_warn_ratio: float = 1.5
    # The model embeds the ids seen at least this often in train, the rest map to one UNK
    # (data/vocab.py); 0 keeps the tokenizer's whole vocabulary (a pretrained base needs it).
    vocab_min_count: int = 5

    def validate(self, key: str) -> None:
        _check(
            8 <= self.block_size <= 65536,
            f"{key}.block_size",
            f"must be between 8 and 65536 tokens, got {self.block_size}",
        )
        _check(self.imbalance_warn_ratio >= 1, f"{key}.imbalance_warn_ratio", "must be >= 1")
        _check(self.vocab_min_count >= 0, f"{key}.vocab_min_count", "must be >= 0 (0 keeps every id)")


# --------------------------------------------------------------------------- model


@dataclass
class ArchParams:
    """GPT-2 shape for a base trained from scratch (ignored for pretrained init)."""

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128
    # Residual and embedding dropout (attention dropout stays 0: on the CPU it costs a
    # slower attention kernel for no measured gain). A few MB of text overfit in 2 epochs.
    dropout: float = 0.0

    def validate(self, key: str) -> None:
        for name in ("n_layer", "n_embd", "n_head", "n_positions"):
            _check(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")
        _check(0 <= self.dropout < 1, f"{key}.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(
            self.n_embd % self.n_head == 0,
            f"{key}.n_embd",
            f"({self.n_embd}) must be divisible by n_head ({self.n_head})",
        )


@dataclass
class ModelParams:
    # `scratch` trains a GPT-2-shaped base from `arch`; anything else is a hub
    # name (e.g. `gpt2`) or a local directory with a pretrained GPT-2.
    init: str = "scratch"
    arch: ArchParams = field(default_factory=ArchParams)
    moe_layers: list[int] = field(default_factory=lambda: [2, 3])
    n_experts: int = 8
    top_k: int = 1
    router_noise_std: float = 0.0
    router_noise_anneal: float = 0.25
    lb_coef: float = 0.01
    z_coef: float = 0.001
    lb_scope: Literal["step", "micro"] = "step"
    moe_init: Literal["upcycle", "scratch"] = "upcycle"
    # "normal": N(0, 0.02) rows; "centered": the same rows made blind to the hidden states'
    # common component, measured on train blocks (model/router.py, Router.center_).
    router_init: Literal["normal", "centered"] = "normal"
    calibration_blocks: int = 64
    upcycle_noise: float = 1.0e-3
    ghost_experts: int = 0
    ghost_threshold: float = 0.5
    ghost_patience: int = 3

    def validate(self, key: str) -> None:
        _check(self.n_experts >= 1, f"{key}.n_experts", f"must be >= 1, got {self.n_experts}")
        _check(
            1 <= self.top_k <= self.n_experts,
            f"{key}.top_k",
            f"must be between 1 and model.n_experts ({self.n_experts}), got {self.top_k}",
        )
        _check(len(self.moe_layers) > 0, f"{key}.moe_layers", "must list at least one block index")
        _check(len(set(self.moe_layers)) == len(self.moe_layers), f"{key}.moe_layers", "has repeated indices")
        if self.init == "scratch":
            for i in self.moe_layers:
                _check(
                    0 <= i < self.arch.n_layer,
                    f"{key}.moe_layers",
                    f"index {i} is outside the model's blocks 0..{self.arch.n_layer - 1} (model.arch.n_layer)",
                )
        for name in ("router_noise_std", "lb_coef", "z_coef", "upcycle_noise"):
            v = getattr(self, name)
            _check(v >= 0, f"{key}.{name}", f"must be >= 0, got {v}")
        _check(0 <= self.router_noise_anneal <= 1, f"{key}.router_noise_anneal", "must be in [0, 1]")
        _check(self.ghost_experts >= 0, f"{key}.ghost_experts", "must be >= 0")
        _check(self.calibration_blocks >= 1, f"{key}.calibration_blocks", "must be >= 1")
        _check(0 < self.ghost_threshold <= 1, f"{key}.ghost_threshold", "must be in (0, 1]")
        _check(self.ghost_patience >= 1, f"{key}.ghost_patience", "must be >= 1")


# --------------------------------------------------------------------------- training


@dataclass
class OptimParams:
    lr: float = 1.0e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_frac: float = 0.1
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0

    def validate(self, key: str) -> None:
        _check(self.lr > 0, f"{key}.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"{key}.beta1", "betas must be in [0, 1)")
        _check(0 <= self.warmup_frac < 1, f"{key}.warmup_frac", "must be in [0, 1)")
        _check(0 <= self.min_lr_frac <= 1, f"{key}.min_lr_frac", "must be in [0, 1]")
        _check(self.grad_clip >= 0, f"{key}.grad_clip", "must be >= 0 (0 disables clipping)")


@dataclass
class BaseParams:
    """The dense starting point every variant fine-tunes (trained here when init=scratch)."""

    seed: int = 0
    max_steps: int = 150
    batch_size: int = 16
    grad_accum: int = 1
    optim: OptimParams = field(default_factory=lambda: OptimParams(lr=3.0e-3))

    def validate(self, key: str) -> None:
        _check(self.max_steps >= 0, f"{key}.max_steps", "must be >= 0")
        _check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _check(self.grad_accum >= 1, f"{key}.grad_accum", "must be >= 1")


@dataclass
class TrainParams:
    seed: int = 0
    max_steps: int = 100
    batch_size: int = 16
    grad_accum: int = 1
    optim: OptimParams = field(default_factory=OptimParams)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    log_every: int = 10
    eval_every: int = 50
    eval_batch_size: int = 32
    snapshot_every: int = 25
    resume_every: int = 25
    collapse_threshold: float = 0.6
    collapse_patience: int = 3
    # A layer with fewer live experts (any token in the logging window) than this is hit:
    # at CPU scale a router without load balancing kills experts before one passes 60%.
    collapse_min_live: int = 7
    collapse_warmup: int = 0
    collapse_stop: bool = False

    def validate(self, key: str) -> None:
        _check(self.max_steps >= 1, f"{key}.max_steps", f"must be >= 1, got {self.max_steps}")
        warm = int(self.optim.warmup_frac * self.max_steps)
        _check(warm < self.max_steps, f"{key}.max_steps", f"must exceed the warmup ({warm} steps)")
        _check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _check(self.grad_accum >= 1, f"{key}.grad_accum", "must be >= 1")
        for name in ("log_every", "eval_every", "eval_batch_size", "snapshot_every", "resume_every"):
            _check(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")
        _check(0 < self.collapse_threshold <= 1, f"{key}.collapse_threshold", "must be in (0, 1]")
        _check(self.collapse_patience >= 1, f"{key}.collapse_patience", "must be >= 1")
        _check(self.collapse_min_live >= 0, f"{key}.collapse_min_live", "must be >= 0")
        _check(self.collapse_warmup >= 0, f"{key}.collapse_warmup", "must be >= 0")


@dataclass
class AnalyzeParams:
    seed: int = 0
    n_permutations: int = 200
    n_bootstrap: int = 200
    min_token_count: int = 10
    max_eval_blocks: int = 0  # 0 = the whole eval set
    # Shuffles for the plug-in-bias nulls of the token-identity information numbers.
    n_shuffles: int = 20
    # Format-artifact test: perturbations (names in analysis.perturb.PERTURBATIONS) and the prefix.
    format_perturbations: list[str] = field(
        default_factory=lambda: ["prefix", "blank_lines", "double_spaces"]
    )
    format_prefix: str = "Problem: "
    # The MoE variant the report's prose, knockout, token types and format test describe
    # (the first of run_variants when it is not trained).
    main_variant: str = "moe"
    # Sequences per forward pass of the analysis.
    batch_size: int = 32
    # Eval blocks (equal per domain) for the expert knockout, which needs the LM head per
    # expert and layer; 0 skips the knockout.
    knockout_blocks: int = 48
    # Train blocks routed for the eval-vs-train comparison; 0 skips it.
    train_blocks: int = 192
    # Eval documents per domain routed with their format perturbed; 0 skips the test.
    format_docs: int = 24
    # Eval blocks (equal per domain) routed by every training snapshot for the saturation curve.
    saturation_blocks: int = 192
    # Router seeds of the untrained-router null (the upcycled base, router at init).
    untrained_seeds: int = 39

    def validate(self, key: str) -> None:
        _check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        for name in ("knockout_blocks", "train_blocks", "format_docs", "saturation_blocks"):
            _check(getattr(self, name) >= 0, f"{key}.{name}", "must be >= 0 (0 skips it)")
        _check(self.n_permutations >= 1, f"{key}.n_permutations", "must be >= 1")
        _check(self.n_bootstrap >= 1, f"{key}.n_bootstrap", "must be >= 1")
        _check(self.min_token_count >= 1, f"{key}.min_token_count", "must be >= 1")
        _check(self.max_eval_blocks >= 0, f"{key}.max_eval_blocks", "must be >= 0")
        _check(self.n_shuffles >= 1, f"{key}.n_shuffles", "must be >= 1")
        _check(self.untrained_seeds >= 2, f"{key}.untrained_seeds", "must be >= 2 (a null needs a spread)")
        from moe_emergence.analysis.perturb import PERTURBATIONS

        known = tuple(PERTURBATIONS)
        for i, kind in enumerate(self.format_perturbations):
            _check(kind in known, f"{key}.format_perturbations[{i}]", f"is {kind!r}; known: {', '.join(known)}")


@dataclass
class Params:
    data: DataParams = field(default_factory=DataParams)
    split: SplitParams = field(default_factory=SplitParams)
    sample: SampleParams = field(default_factory=SampleParams)
    pack: PackParams = field(default_factory=PackParams)
    model: ModelParams = field(default_factory=ModelParams)
    base: BaseParams = field(default_factory=BaseParams)
    train: TrainParams = field(default_factory=TrainParams)
    # Per-variant overrides of `model` and `train` keys (flat, e.g. `lb_coef: 0.0`).
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Which MoE variants `dvc repro` trains (dense always runs).
    run_variants: list[str] = field(default_factory=lambda: ["moe", "no_lb"])
    # Every variant trains once per seed (router and expert init, batch order); the base is shared.
    seeds: list[int] = field(default_factory=lambda: [0])
    analyze: AnalyzeParams = field(default_factory=AnalyzeParams)

    def validate(self, key: str) -> None:
        _check(len(self.seeds) >= 1, "seeds", "must list at least one seed")
        _check(len(set(self.seeds)) == len(self.seeds), "seeds", f"has repeated seeds: {self.seeds}")
        _check(all(s >= 0 for s in self.seeds), "seeds", f"must be >= 0, got {self.seeds}")
        for name in self.run_variants:
            _check(
                name in self.variants and name != "dense",
                "run_variants",
                f"names {name!r}, which is not a MoE variant defined under `variants`",
            )
        for name in self.variants:
            m, t = self.variant(name)  # every override must name a real key with a valid value
            _check(
                t.collapse_min_live <= m.n_experts,
                "train.collapse_min_live",
                f"({t.collapse_min_live}) cannot exceed model.n_experts ({m.n_experts}) "
                f"(variant {name!r}): every check would flag a collapse",
            )

    def variant(self, name: str) -> tuple[ModelParams, TrainParams]:
        """The model and train params of a variant: the shared sections plus its overrides."""
        if name not in self.variants:
            raise ParamsError(
                f"params.yaml: variant {name!r} is not defined under `variants` "
                f"(defined: {', '.join(sorted(self.variants)) or 'none'})"
            )
        over = self.variants[name] or {}
        model = dataclasses.asdict(self.model)
        train = dataclasses.asdict(self.train)
        for k, v in over.items():
            if k in ("moe",):
                continue
            target = model if k in model else train if k in train else None
            if target is None:
                raise ParamsError(
                    f"params.yaml: `variants.{name}.{k}` is not a key of `model` or `train`"
                )
            target[k] = v
        m = _build(ModelParams, model, "model")
        t = _build(TrainParams, train, "train")
        return m, t

    def is_moe(self, name: str) -> bool:
        return bool((self.variants.get(name) or {}).get("moe", name != "dense"))


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(errors[0] if errors else f"params.yaml: `{key}` has an invalid value")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ParamsError(f"params.yaml: `{key}` must be one of {choices}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"params.yaml: `{key}` must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"params.yaml: `{key}` must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ParamsError(f"params.yaml: `{key}` must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()
        ):
            raise ParamsError(f"params.yaml: `{key}` must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"params.yaml: `{key}` must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"params.yaml: `{key}` must be a string, got {value!r}")
        return value
    raise ParamsError(f"params.yaml: `{key}` has unsupported type {_type_name(tp)}")


def _build(cls: type, raw: Any, key: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: `{key}` must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"`{key}.{unknown[0]}`" if key else f"`{unknown[0]}`"
        raise ParamsError(
            f"params.yaml: unknown key {where}; known keys{' of `' + key + '`' if key else ''}: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{key}.{name}" if key else name)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(key)
    return obj


def parse_params(raw: Any) -> Params:
    """Validate a parsed params mapping into a `Params` object."""
    return _build(Params, raw, "")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every problem is a `ParamsError` naming the key."""
    p = Path(path)
    if not p.exists():
        raise ParamsError(f"{p}: params file not found (run from the repository root)")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{p}: not valid YAML: {e}") from None
    return parse_params(raw or {})
