"""The base run and the variant runs, assembled from params (what the stage commands call)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from moe_emergence.config import Params, TrainParams
from moe_emergence.training.distributed import init_distributed, shutdown
from moe_emergence.training.trainer import PackedSplit, RunSpec, Trainer, file_digest

WORK_ROOT = Path(".cache/runs")


def load_split(packed_dir: Path, split: str, domains: list[str] | None = None) -> PackedSplit:
    """Load `<packed_dir>/<split>.arrow` (memory-mapped) as token blocks with domain codes."""
    from moe_emergence.data.packed import load_packed

    p = load_packed(Path(packed_dir) / f"{split}.arrow")
    names = domains or sorted(set(p.domains))
    index = {d: i for i, d in enumerate(names)}
    codes = np.array([index[d] for d in p.domains], dtype=np.int64)
    return PackedSplit(ids=p.ids, domain_codes=codes, domain_names=names)


def load_data(packed_dir: Path) -> tuple[PackedSplit, PackedSplit]:
    train = load_split(packed_dir, "train")
    evals = load_split(packed_dir, "eval", train.domain_names)
    return train, evals


def _inputs(packed_dir: Path, base_dir: Path | None) -> dict[str, str]:
    out = {"train.arrow": file_digest(Path(packed_dir) / "train.arrow", limit=1 << 20)}
    if base_dir is not None:
        out["base"] = file_digest(Path(base_dir) / "model.safetensors", limit=1 << 20)
    return out


def base_train_params(params: Params) -> TrainParams:
    """The base run trains with the `base` section; it logs and evaluates like a variant."""
    b = params.base
    steps = max(1, b.max_steps)
    return dataclasses.replace(
        params.train, seed=b.seed, max_steps=steps, batch_size=b.batch_size, grad_accum=b.grad_accum,
        optim=b.optim, eval_every=steps, snapshot_every=steps, collapse_stop=False,
    )


def run_base(params: Params, packed_dir: Path, model_out: Path, report_out: Path) -> None:
    from moe_emergence.model.checkpoint import save_model
    from moe_emergence.model.gpt2 import load_pretrained, make_dense

    dist = init_distributed("cuda" if params.train.device != "cpu" and _cuda() else "cpu")
    try:
        train, evals = load_data(packed_dir)
        mp = params.model
        if mp.init == "scratch":
            model = make_dense(mp.arch, seed=params.base.seed)  # seeded: the base must reproduce
        else:
            model = load_pretrained(mp.init)
        block = train.ids.shape[1]
        n_pos = model.config.n_positions
        if block > n_pos:
            from moe_emergence.config import ParamsError

            raise ParamsError(f"params.yaml: `pack.block_size` ({block}) exceeds the model's context "
                              f"({n_pos}, model.arch.n_positions or the pretrained model's)")
        if params.base.max_steps == 0:
            # A pretrained base is used as it is: export it in the pipeline's own format.
            save_model(model, model_out, {"step": 0, "variant": "base", "init": mp.init})
            from moe_emergence.atomic import write_json

            write_json(report_out / "metrics.json", {"steps": 0, "init": mp.init})
            print(f"[base] exported {mp.init} to {model_out} (base.max_steps is 0)", file=sys.stderr)
            return
        spec = RunSpec(
            name="base", train=base_train_params(params), model=None, model_out=model_out,
            report_out=report_out, work_dir=WORK_ROOT / "base",
            inputs={**_inputs(packed_dir, None), "init": mp.init, "arch": dataclasses.asdict(mp.arch)},
        )
        Trainer(spec, model, train, evals, dist).run()
    finally:
        shutdown()


def run_variant(params: Params, name: str, packed_dir: Path, base_dir: Path, model_out: Path,
                report_out: Path, work_root: Path | None = None) -> None:
    from moe_emergence.model.checkpoint import load_model
    from moe_emergence.model.gpt2 import to_moe

    mp, tp = params.variant(name)
    dist = init_distributed("cuda" if tp.device != "cpu" and _cuda() else "cpu")
    try:
        train, evals = load_data(packed_dir)
        model, _ = load_model(base_dir)
        moe = params.is_moe(name)
        if moe:
            model = to_moe(model, mp, seed=tp.seed)
        spec = RunSpec(
            name=name, train=tp, model=mp if moe else None, model_out=model_out, report_out=report_out,
            work_dir=(work_root or WORK_ROOT) / name, inputs=_inputs(packed_dir, base_dir),
        )
        Trainer(spec, model, train, evals, dist).run()
    finally:
        shutdown()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
