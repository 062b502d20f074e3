"""The base run and the variant runs, assembled from params (what the stage commands call)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from moe_emergence.core.config import ModelParams, Params, ParamsError, TrainParams
from moe_emergence.data.packed import spread_rows
from moe_emergence.data.vocab import VOCAB_FILE, Vocab
from moe_emergence.training.distributed import init_distributed, shutdown
from moe_emergence.training.trainer import PackedSplit, RunSpec, Trainer, file_digest

WORK_ROOT = Path(".cache/runs")


def load_split(packed_dir: Path, split: str, vocab: Vocab, domains: list[str] | None = None) -> PackedSplit:
    """Load `<packed_dir>/<split>.arrow` as token blocks in the model's ids, with domain codes."""
    from moe_emergence.data.packed import load_packed

    p = load_packed(Path(packed_dir) / f"{split}.arrow")
    names = domains or sorted(set(p.domains))
    index = {d: i for i, d in enumerate(names)}
    codes = np.array([index[d] for d in p.domains], dtype=np.int64)
    return PackedSplit(ids=vocab.encode(p.ids), domain_codes=codes, domain_names=names)


def load_data(packed_dir: Path, vocab: Vocab) -> tuple[PackedSplit, PackedSplit]:
    train = load_split(packed_dir, "train", vocab)
    evals = load_split(packed_dir, "eval", vocab, train.domain_names)
    return train, evals


def check_vocab(model_vocab: Vocab, packed_dir: Path, what: str) -> None:
    """The model embeds the ids pack chose; otherwise the model and the data are from different runs."""
    packed = Vocab.read(Path(packed_dir) / VOCAB_FILE)
    if packed != model_vocab:
        raise ParamsError(
            f"{what} embeds {model_vocab.size} ids but {packed_dir / VOCAB_FILE} lists {packed.size}: "
            "the model and the packed data come from different runs; run `dvc repro`"
        )


def _inputs(packed_dir: Path, base_dir: Path | None) -> dict[str, str]:
    out = {"train.arrow": file_digest(Path(packed_dir) / "train.arrow", limit=1 << 20)}
    if base_dir is not None:
        out["base"] = file_digest(Path(base_dir) / "model.safetensors", limit=1 << 20)
    return out


def base_train_params(params: Params) -> TrainParams:
    """The base run trains with the `base` section; it logs and evaluates like a variant."""
    b = params.base
    steps = max(1, b.max_steps)
    return params.train.model_copy(update=dict(
        seed=b.seed, max_steps=steps, batch_size=b.batch_size, grad_accum=b.grad_accum,
        optim=b.optim, eval_every=steps, snapshot_every=steps, collapse_stop=False,
    ))


def run_base(params: Params, packed_dir: Path, model_out: Path, report_out: Path,
             work_root: Path | None = None) -> None:
    from moe_emergence.model.checkpoint import save_model
    from moe_emergence.model.gpt2 import make_dense
    from moe_emergence.model.spec import ArchSpec

    dist = init_distributed("cuda" if params.train.device != "cpu" and _cuda() else "cpu")
    try:
        mp = params.model
        vocab = Vocab.read(Path(packed_dir) / VOCAB_FILE)
        if mp.init == "scratch":
            # seeded: the base must reproduce
            model = make_dense(ArchSpec.from_params(mp.arch), vocab_size=vocab.size, seed=params.base.seed)
            vocab.stamp(model.config)
        else:
            if not vocab.full:
                raise ParamsError(
                    f"params.yaml: `pack.vocab_min_count` is {params.pack.vocab_min_count}, but a pretrained "
                    f"base (model.init: {mp.init}) embeds the tokenizer's whole vocabulary; set it to 0"
                )
            model = pretrained(mp)
        train, evals = load_data(packed_dir, vocab)
        check_batch(train.ids.shape[0], params.base.batch_size * params.base.grad_accum, "base")
        block = train.ids.shape[1]
        n_pos = model.config.n_positions
        if block > n_pos:
            raise ParamsError(f"params.yaml: `pack.block_size` ({block}) exceeds the model's context "
                              f"({n_pos}, model.arch.n_positions or the pretrained model's)")
        if params.base.max_steps == 0:
            # A pretrained base is used as it is: export it in the pipeline's own format.
            save_model(model, model_out, {"step": 0, "variant": "base", "init": mp.init})
            from moe_emergence.core.atomic import atomic_dir, write_json

            with atomic_dir(report_out / "plots") as tmp:  # no curves: the CPU profile's must not linger
                (tmp / "README.md").write_text(f"No base training: `model.init: {mp.init}` exported as it is.\n")
            write_json(report_out / "metrics.json", {"steps": 0, "init": mp.init})
            print(f"[base] exported {mp.init} to {model_out} (base.max_steps is 0)", file=sys.stderr)
            return
        spec = RunSpec(
            name="base", train=base_train_params(params), model=None, model_out=model_out,
            report_out=report_out, work_dir=(work_root or WORK_ROOT) / "base", data_stream="base",
            inputs={**_inputs(packed_dir, None), "init": mp.init, "arch": mp.arch.model_dump()},
        )
        Trainer(spec, model, train, evals, dist).run()
    finally:
        shutdown()


def pretrained(mp: ModelParams):
    """The pretrained GPT-2 named by `model.init`, its depth checked against `model.moe_layers`."""
    from moe_emergence.model.gpt2 import load_pretrained

    try:
        model = load_pretrained(mp.init)
    except (RuntimeError, ValueError, OSError) as e:
        raise ParamsError(f"params.yaml: `model.init` ({mp.init}): {e}") from None
    check_moe_layers(mp.moe_layers, model.config.n_layer, f"model.init {mp.init!r}")
    return model


def check_moe_layers(layers: list[int], n_layer: int, what: str) -> None:
    bad = [i for i in layers if not 0 <= i < n_layer]
    if bad:
        raise ParamsError(f"params.yaml: `model.moe_layers` index {bad[0]} is outside the layers 0..{n_layer - 1} "
                          f"of {what}")


def check_batch(n_train: int, batch: int, section: str) -> None:
    """A batch larger than the train set would repeat blocks within a step: refuse it before any work."""
    if batch > n_train:
        raise ParamsError(f"params.yaml: `{section}.batch_size` x `{section}.grad_accum` ({batch} blocks) exceeds the "
                          f"{n_train} train blocks in data/packed; raise sample.size_mb or lower the batch")


def run_name(variant: str, seed: int) -> str:
    """A training run: one variant with one seed (`moe/seed0`); also its path under models/."""
    return f"{variant}/seed{seed}"


def run_variant(params: Params, name: str, seed: int, packed_dir: Path, base_dir: Path, model_out: Path,
                report_out: Path, work_root: Path | None = None) -> None:
    """Fine-tune variant `name` from the base with `seed` (router and expert init, batch order)."""
    import torch

    from moe_emergence.model.checkpoint import load_model
    from moe_emergence.model.gpt2 import to_moe
    from moe_emergence.model.spec import MoESpec

    mp, tp = params.variant(name)
    tp = tp.model_copy(update={"seed": seed})
    dist = init_distributed("cuda" if tp.device != "cpu" and _cuda() else "cpu")
    try:
        model, _ = load_model(base_dir)
        vocab = Vocab.of_model(model)
        check_vocab(vocab, packed_dir, f"the base model in {base_dir}")
        train, evals = load_data(packed_dir, vocab)
        check_batch(train.ids.shape[0], tp.batch_size * tp.grad_accum, "train")
        moe = params.is_moe(name)
        if moe:
            check_moe_layers(mp.moe_layers, model.config.n_layer, f"the base model in {base_dir}")
            calib = torch.from_numpy(spread_rows(train.ids, mp.calibration_blocks))
            model = to_moe(model, MoESpec.from_params(mp), seed=tp.seed, calibration=calib)
        run = run_name(name, seed)
        spec = RunSpec(
            name=run, train=tp, model=mp if moe else None, model_out=model_out, report_out=report_out,
            work_dir=(work_root or WORK_ROOT) / run, inputs=_inputs(packed_dir, base_dir),
        )
        Trainer(spec, model, train, evals, dist).run()
    finally:
        shutdown()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
