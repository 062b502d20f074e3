"""params.yaml as one typed object, validated once (pydantic) and passed down.

Each section of `params.yaml` is a model below; unknown keys, wrong types and
out-of-range values are refused before a stage does any work, as one
`ParamsError` naming the dotted key: "params.yaml: `model.top_k` must be ...".
Numbers are cast on the way in (`dvc exp run -S model.lb_coef=0` writes an
int, PyYAML reads `1e-4` as a string). This module imports nothing of the
project: every other layer reads it.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DOMAINS = ("code", "math", "prose")


class ParamsError(ValueError):
    """A parameter in params.yaml is unknown, ill-typed or out of range."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def bad(key: str, msg: str) -> ValueError:
    """A validator's complaint about `key` (relative to the section it checks)."""
    return ValueError(f"`{key}` {msg}")


def template_fields(template: str) -> list[str]:
    """The field names of a record template (`"{question}\\n\\n{answer}"`); ValueError if malformed."""
    names: list[str] = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ValueError(f"template field {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                             "must be a plain {name}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"template {template!r} names no field")
    return names


# --------------------------------------------------------------------------- data


class _Records(Section):
    """What the hub and local sources share: documents built from record fields."""

    template: str = "{text}"  # which fields make the text, e.g. "{question}\n\n{answer}"
    group_field: str | None = None
    strip_patterns: list[str] = []  # regular expressions removed from each text (e.g. "<<48/2=24>>")
    max_docs: int = Field(200000, ge=1)  # stop after this many documents kept by filters and dedupe

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        template_fields(v)
        return v

    @field_validator("strip_patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for i, pat in enumerate(v):
            try:
                re.compile(pat)
            except re.error as e:
                raise bad(f"strip_patterns[{i}]", f"is not a regular expression: {e}") from None
        return v


class EmbeddedSource(Section):
    """Offline corpora the interpreter and installed packages ship (data/sources/embedded.py)."""

    kind: Literal["embedded"]
    include_tests: bool = True  # code: the standard library's test packages too
    generators: list[str] = ["gsm_symbolic"]  # math: reasoning-gym generators
    n_docs: int = Field(4000, gt=0)  # math: problems per generator
    max_docs: int = Field(200000, ge=1)


class HubSource(_Records):
    """A Hugging Face hub dataset, or a zip of JSON records by `url` (MathQA)."""

    kind: Literal["hf"]
    dataset: str = ""
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    data_files: str | None = None
    streaming: bool = True
    shuffle_buffer: int = Field(10000, ge=1)
    url: str | None = None
    # rows: one record per document; wikitext_articles: WikiText lines joined into articles
    documents: Literal["rows", "wikitext_articles"] = "rows"

    @model_validator(mode="after")
    def _where(self) -> HubSource:
        if not (self.dataset or self.url):
            raise bad("dataset", "is required when kind is 'hf' (or give `url`)")
        return self


class LocalSource(_Records):
    """JSON, JSONL, Parquet, CSV or TXT files on disk, by path or glob."""

    kind: Literal["local"]
    path: str = Field(min_length=1)
    format: Literal["auto", "json", "jsonl", "parquet", "csv", "txt"] = "auto"


Source = Annotated[EmbeddedSource | HubSource | LocalSource, Field(discriminator="kind")]


class DataParams(Section):
    seed: int = 0
    sources: dict[str, Source] = {d: EmbeddedSource(kind="embedded") for d in DOMAINS}
    min_chars: dict[str, Annotated[int, Field(ge=0)]] = {"code": 100, "math": 0, "prose": 200}  # strict: len > min
    max_chars: int = Field(10000, gt=0)

    @model_validator(mode="after")
    def _domains(self) -> DataParams:
        if not self.sources:
            raise bad("sources", "must name at least one domain")
        for dom, src in self.sources.items():
            if not (dom.isidentifier() and dom.islower()):
                raise bad(f"sources.{dom}", "domain names must be lower-case identifiers (they become metric names)")
            if src.kind == "embedded" and dom not in DOMAINS:
                raise bad(f"sources.{dom}.kind", f"is 'embedded' but there is no embedded corpus for domain {dom!r} "
                          f"(embedded domains: {', '.join(DOMAINS)}); use kind 'local' or 'hf'")
        for dom in self.min_chars if "min_chars" in self.model_fields_set else ():
            if dom not in self.sources:
                raise bad(f"min_chars.{dom}", "names a domain not in data.sources")
        return self


class SplitParams(Section):
    seed: int = 0
    # Eval size in documents: whole groups whose hash of (seed, group id)
    # falls below eval_fraction go to eval, then eval is topped up or cut (in hash order) to
    # min(max(eval_min, floor(eval_fraction * n)), floor(eval_max_fraction * n)) documents;
    # `eval_count` asks for an explicit number instead (data/split.py).
    eval_fraction: float = Field(0.05, gt=0, lt=1)
    eval_min: int = Field(10, ge=0)
    eval_max_fraction: float = Field(0.10, lt=1)
    eval_count: int | None = Field(None, ge=1)
    # Eval holds at least this many groups: the analysis resamples groups.
    eval_min_groups: int = Field(12, ge=0)
    # An eval document with an estimated Jaccard similarity (MinHash over shingles of
    # `shingle_size` tokens) of at least `near_dup_threshold` to a train document is dropped.
    near_dup_threshold: float = Field(0.8, gt=0, le=1)
    shingle_size: int = Field(5, ge=1)
    num_perm: int = Field(128, ge=16)

    @model_validator(mode="after")
    def _fractions(self) -> SplitParams:
        if self.eval_max_fraction < self.eval_fraction:
            raise bad("eval_max_fraction", f"must be in [eval_fraction, 1), got {self.eval_max_fraction}")
        return self


class SampleParams(Section):
    seed: int = 0
    # Characters per domain (size_mb * 2**20), train and eval together; eval keeps its share.
    size_mb: float = Field(1.0, gt=0)
    on_short: Literal["error", "warn"] = "error"  # a domain with fewer characters than the budget
    # Eval documents are taken one per group in turn until the budget is spent and at least
    # this many groups are in (data/sample.py).
    eval_min_groups: int = Field(12, ge=0)
    eval_max_mb: float = Field(1.0, gt=0)  # at most this many characters of eval per domain


class PackParams(Section):
    seed: int = 0
    tokenizer: Literal["embedded", "gpt2"] = "embedded"
    block_size: int = Field(128, ge=8, le=65536)
    balance_train: bool = True
    imbalance_warn_ratio: float = Field(1.5, ge=1)
    # The model embeds the ids seen at least this often in train, the rest map to one UNK
    # (data/vocab.py); 0 keeps the tokenizer's whole vocabulary (a pretrained base needs it).
    vocab_min_count: int = Field(5, ge=0)


# --------------------------------------------------------------------------- model


class ArchParams(Section):
    """GPT-2 shape for a base trained from scratch (ignored for pretrained init)."""

    n_layer: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=1)
    n_head: int = Field(4, ge=1)
    n_positions: int = Field(128, ge=1)
    # Residual and embedding dropout; attention dropout stays 0 (on the CPU it costs a slower
    # attention kernel). A few MB of text overfit in two epochs without it.
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads(self) -> ArchParams:
        if self.n_embd % self.n_head:
            raise bad("n_embd", f"({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class ModelParams(Section):
    # `scratch` trains a GPT-2-shaped base from `arch`; anything else is a hub name (`gpt2`)
    # or a local directory with a pretrained GPT-2.
    init: str = "scratch"
    arch: ArchParams = ArchParams()
    moe_layers: list[int] = Field([2, 3], min_length=1)
    n_experts: int = Field(8, ge=1)
    top_k: int = Field(1, ge=1)
    router_noise_std: float = Field(0.0, ge=0)
    router_noise_anneal: float = Field(0.25, ge=0, le=1)
    lb_coef: float = Field(0.01, ge=0)
    z_coef: float = Field(0.001, ge=0)
    lb_scope: Literal["step", "micro"] = "step"
    moe_init: Literal["upcycle", "scratch"] = "upcycle"
    # "normal": N(0, 0.02) rows; "centered": the same rows made blind to the hidden states'
    # common component, measured on train blocks (model/router.py).
    router_init: Literal["normal", "centered"] = "normal"
    calibration_blocks: int = Field(64, ge=1)
    upcycle_noise: float = Field(1.0e-3, ge=0)
    ghost_experts: int = Field(0, ge=0)
    ghost_threshold: float = Field(0.5, gt=0, le=1)
    ghost_patience: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _layers(self) -> ModelParams:
        if not 1 <= self.top_k <= self.n_experts:
            raise bad("top_k", f"must be between 1 and model.n_experts ({self.n_experts}), got {self.top_k}")
        if len(set(self.moe_layers)) != len(self.moe_layers):
            raise bad("moe_layers", f"has repeated indices: {self.moe_layers}")
        if self.init == "scratch":
            for i in self.moe_layers:
                if not 0 <= i < self.arch.n_layer:
                    raise bad("moe_layers", f"index {i} is outside the model's layers 0..{self.arch.n_layer - 1} "
                              "(model.arch.n_layer)")
        return self


# --------------------------------------------------------------------------- training


class OptimParams(Section):
    lr: float = Field(1.0e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    warmup_frac: float = Field(0.1, ge=0, lt=1)
    min_lr_frac: float = Field(0.1, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables clipping


class BaseParams(Section):
    """The dense starting point every variant fine-tunes (trained here when init=scratch)."""

    seed: int = 0
    max_steps: int = Field(150, ge=0)  # 0: a pretrained base is exported as it is
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    optim: OptimParams = OptimParams(lr=3.0e-3)


class TrainParams(Section):
    seed: int = 0  # set per run from `seeds`, not in params.yaml
    max_steps: int = Field(100, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    optim: OptimParams = OptimParams()
    # Data-parallel processes on one machine (torchrun when > 1; the global batch stays batch_size)
    nproc: int = Field(1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(50, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    snapshot_every: int = Field(25, ge=1)
    resume_every: int = Field(25, ge=1)
    collapse_threshold: float = Field(0.6, gt=0, le=1)
    collapse_patience: int = Field(3, ge=1)
    # A layer with fewer live experts (any token in the logging window) than this is hit.
    collapse_min_live: int = Field(7, ge=0)
    collapse_warmup: int = Field(0, ge=0)
    collapse_stop: bool = False

    @model_validator(mode="after")
    def _warmup(self) -> TrainParams:
        warm = int(self.optim.warmup_frac * self.max_steps)
        if warm >= self.max_steps:
            raise bad("max_steps", f"must exceed the warmup ({warm} steps)")
        return self


class AnalyzeParams(Section):
    seed: int = 0
    n_permutations: int = Field(200, ge=1)
    n_bootstrap: int = Field(200, ge=1)
    min_token_count: int = Field(10, ge=1)
    max_eval_blocks: int = Field(0, ge=0)  # 0 = the whole eval set
    n_shuffles: int = Field(20, ge=1)  # plug-in-bias nulls of the information numbers
    # Format-artifact test: perturbations (names in analysis/perturb.py) and the prefix.
    format_perturbations: list[str] = ["prefix", "blank_lines", "double_spaces"]
    format_prefix: str = "Problem: "
    # The MoE variant whose knockout and token types the report shows (the first of
    # run_variants when it is not trained).
    main_variant: str = "moe"
    batch_size: int = Field(32, ge=1)
    knockout_blocks: int = Field(48, ge=0)  # eval blocks, equal per domain; 0 skips the knockout
    train_blocks: int = Field(192, ge=0)  # train blocks routed for eval-vs-train; 0 skips it
    format_docs: int = Field(24, ge=0)  # eval documents per domain with their format changed; 0 skips
    saturation_blocks: int = Field(192, ge=0)  # eval blocks routed by every snapshot; 0 skips
    untrained_seeds: int = Field(39, ge=2)  # router seeds of the untrained-router null


class Params(Section):
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    sample: SampleParams = SampleParams()
    pack: PackParams = PackParams()
    model: ModelParams = ModelParams()
    base: BaseParams = BaseParams()
    train: TrainParams = TrainParams()
    # Per-variant overrides of `model` and `train` keys (flat, e.g. `lb_coef: 0.0`); `moe: false`
    # makes a dense variant.
    variants: dict[str, dict[str, Any] | None] = {}
    run_variants: list[str] = ["moe", "no_lb"]  # the MoE variants `dvc repro` trains (dense always runs)
    seeds: list[Annotated[int, Field(ge=0)]] = Field([0], min_length=1)  # each variant trains once per seed
    analyze: AnalyzeParams = AnalyzeParams()

    @model_validator(mode="after")
    def _runs(self) -> Params:
        if "seed" in self.train.model_fields_set:
            raise bad("train.seed", "is set per run from `seeds` (a list); remove it from `train`")
        if len(set(self.seeds)) != len(self.seeds):
            raise bad("seeds", f"has repeated seeds: {self.seeds}")
        if len(set(self.run_variants)) != len(self.run_variants):
            raise bad("run_variants", f"names a variant twice: {self.run_variants}")
        for name in self.run_variants:
            if name not in self.variants or not self.is_moe(name):
                raise bad("run_variants", f"names {name!r}, which is not a MoE variant defined under `variants` "
                          "(the dense baseline always runs; list MoE variants only)")
        for name in self.variants:
            m, t = self.variant(name)  # every override must name a real key with a valid value
            if self.is_moe(name) and t.collapse_min_live > m.n_experts:
                raise bad("model.n_experts", f"({m.n_experts}) is below train.collapse_min_live "
                          f"({t.collapse_min_live}) in variant {name!r}: every check would flag a collapse; "
                          "lower train.collapse_min_live to at most n_experts")
        for sec, batch in (("base", self.base.batch_size), ("train", self.train.batch_size)):
            if batch % self.train.nproc:
                raise bad(f"{sec}.batch_size", f"({batch}) must be divisible by train.nproc ({self.train.nproc}): "
                          "the global batch is split evenly over the processes")
        if self.model.init == "scratch" and self.pack.block_size > self.model.arch.n_positions:
            raise bad("pack.block_size", f"({self.pack.block_size}) exceeds model.arch.n_positions "
                      f"({self.model.arch.n_positions}): the model cannot read blocks that long")
        return self

    def variant(self, name: str) -> tuple[ModelParams, TrainParams]:
        """The model and train params of a variant: the shared sections plus its overrides."""
        if name not in self.variants:
            raise ParamsError(f"params.yaml: variant {name!r} is not defined under `variants` "
                              f"(defined: {', '.join(sorted(self.variants)) or 'none'})")
        model, train = self.model.model_dump(), self.train.model_dump()
        for k, v in (self.variants[name] or {}).items():
            if k == "moe":
                continue
            target = model if k in model else train if k in train else None
            if target is None:
                raise ParamsError(f"params.yaml: `variants.{name}.{k}` is not a key of `model` or `train`")
            target[k] = v
        return (_validate(ModelParams, model, f"variants.{name}"), _validate(TrainParams, train, f"variants.{name}"))

    def is_moe(self, name: str) -> bool:
        return bool((self.variants.get(name) or {}).get("moe", name != "dense"))


# --------------------------------------------------------------------------- loading


def _say(err: dict[str, Any]) -> str:
    """One pydantic error in the words of this project's messages ("must be ...")."""
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    limits = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in limits:
        return f"must be {limits[kind]} {next(iter(ctx.values()))}, got {got!r}"
    if kind.startswith("int_"):
        return f"must be an integer, got {got!r}"
    if kind.startswith("float_"):
        return f"must be a number, got {got!r}"
    if kind.startswith("bool_"):
        return f"must be true or false, got {got!r}"
    if kind.startswith("string_"):
        return f"must be a string, got {got!r}" if kind == "string_type" else err["msg"].lower()
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got!r}"
    if kind in ("list_type", "too_short"):
        return "must be a list" + (" with at least one entry" if kind == "too_short" else "") + f", got {got!r}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping, got {got!r}"
    if kind == "missing":
        return "is required"
    return err["msg"]


def _validate(cls: type[Section], raw: Any, where: str = "") -> Any:
    try:
        return cls.model_validate(raw if raw is not None else {})
    except ValidationError as e:
        raise ParamsError(_message(e.errors()[0], where)) from None


def _message(err: dict[str, Any], where: str) -> str:
    loc = [str(x) for x in err["loc"] if not (isinstance(x, str) and x in ("embedded", "hf", "local"))]
    key = ".".join([where, *loc] if where else loc).replace(".[", "[")
    if err["type"] == "extra_forbidden":
        return f"params.yaml: unknown key `{key}` (a misspelling? see the keys of the default params.yaml)"
    if err["type"] == "union_tag_invalid":
        return f"params.yaml: `{key}.kind` must be one of {err['ctx']['expected_tags']}, got {err['ctx']['tag']!r}"
    if err["type"] == "union_tag_not_found":
        return f"params.yaml: `{key}.kind` is required (embedded, hf or local)"
    if err["type"] == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        if msg.startswith("params.yaml:"):  # a complete message from a nested check
            return msg
        if msg.startswith("`"):  # `sub.key` says ...: the key is relative to the section
            sub, _, rest = msg[1:].partition("` ")
            return f"params.yaml: `{key + '.' if key else ''}{sub}` {rest}"
        return f"params.yaml: `{key}` {msg}"
    return f"params.yaml: `{key}` {_say(err)}"


def parse_params(raw: Any) -> Params:
    """Validate a parsed params mapping into a `Params` object; errors are one ParamsError."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: the file must hold a mapping of sections, got {raw!r}")
    return _validate(Params, raw)


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
