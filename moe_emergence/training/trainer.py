"""The training loop shared by the base model and every variant.

One optimizer step = `grad_accum` micro-batches of `batch_size` sequences (the
global batch, split over data-parallel ranks). For each micro-batch: forward,
LM loss + lb_coef * LB + z_coef * z (MoE only), scaled by 1/grad_accum,
backward. Then clipping, AdamW, the lr schedule. Every `log_every` steps the
window's losses, throughput and router statistics (over all the window's
tokens) are logged with DVCLive, and the collapse detector and ghost-expert
controller look at the window's loads. Eval runs on the whole eval set every
`eval_every` steps and always at the last step (and at a collapse stop).

Work in progress lives in `.cache/runs/<name>/` (outside DVC's outputs, which
DVC deletes before a stage runs): the resumable state, DVCLive's files and the
model snapshots. A killed run resumes from there when its config fingerprint
matches; the declared outputs are assembled only when the run has finished, so
nothing partial is ever taken for a result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moe_emergence.core.atomic import OutputError, atomic_dir, atomic_path, write_json
from moe_emergence.core.config import ModelParams, TrainParams
from moe_emergence.model.checkpoint import save_model
from moe_emergence.model.gpt2 import latest_routing, moe_layers
from moe_emergence.model.lm_loss import CausalLMLoss
from moe_emergence.training.batches import BatchPlan
from moe_emergence.training.collapse import CollapseDetector
from moe_emergence.training.distributed import Dist, all_reduce_sum
from moe_emergence.training.evaluation import RouterWindow, evaluate, route_only
from moe_emergence.training.schedule import lr_factor, noise_scale, warmup_steps

STATE_VERSION = 2  # 2: the logging window is part of the state


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, resume mismatch, corrupt state)."""


@dataclass
class PackedSplit:
    """Token blocks of one split: ids [n_blocks, block_size] (uint16), a domain code per block."""

    ids: np.ndarray
    domain_codes: np.ndarray
    domain_names: list[str]


@dataclass
class RunSpec:
    name: str
    train: TrainParams
    model: ModelParams | None  # None for a dense run
    model_out: Path  # final model + snapshots (a DVC output)
    report_out: Path  # metrics.json + DVCLive plots (DVC outputs)
    work_dir: Path  # resumable work in progress
    inputs: dict[str, Any] = field(default_factory=dict)  # what else the run depends on (hashes)
    seed_offset: int = 0
    data_stream: str = "finetune"  # the base trains on "base": variants never replay its order

    def fingerprint(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "train": self.train.model_dump(),
            "model": self.model.model_dump() if self.model else None,
            "inputs": self.inputs,
            "data_stream": self.data_stream,
        }


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix]


def file_digest(path: str | Path, limit: int | None = None) -> str:
    """sha256 of a file (of its first `limit` bytes and its size, when given)."""
    h = hashlib.sha256()
    p = Path(path)
    with open(p, "rb") as f:
        if limit is None:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f.read(limit))
            h.update(str(p.stat().st_size).encode())
    return h.hexdigest()


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_for(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Trainer:
    def __init__(self, spec: RunSpec, model: torch.nn.Module, train_set: PackedSplit, eval_set: PackedSplit,
                 dist: Dist | None = None):
        self.spec, self.tp, self.mp = spec, spec.train, spec.model
        self.dist = dist or Dist()
        self.train_set, self.eval_set = train_set, eval_set
        self.device = resolve_device(self.tp.device)
        self.autocast = autocast_for(self.device, self.tp.precision)
        torch.manual_seed(self.tp.seed + spec.seed_offset)
        self.model = model.to(self.device)
        self.model.train()
        self.moe = bool(moe_layers(self.model))
        self.lm = CausalLMLoss(self.model)  # returns (mean LM loss, per-block losses)
        if self.dist.enabled:
            self.ddp: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(
                self.lm,
                device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=self.moe,
            )
        else:
            self.ddp = self.lm
        o = self.tp.optim
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay,
            fused=self.device.type == "cuda" or None,
        )
        self.warmup = warmup_steps(self.tp.max_steps, o.warmup_frac)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, self.tp.max_steps, self.warmup, o.min_lr_frac)
        )
        self.plan = BatchPlan(len(train_set.ids), self.tp.batch_size, self.tp.grad_accum, self.tp.seed,
                              self.dist.rank, self.dist.world, stream=spec.data_stream)
        self.detector = CollapseDetector(self.tp.collapse_threshold, self.tp.collapse_patience,
                                         self.tp.collapse_min_live, self.tp.collapse_warmup)
        self.window = RouterWindow(self.model)
        self.aux = None
        self.ghost = None
        if self.moe:
            from moe_emergence.model.losses import AuxLosses

            self.aux = AuxLosses(self.model, scope=self.mp.lb_scope, n_experts=self.mp.n_experts)
            if self.mp.ghost_experts > 0:
                from moe_emergence.model.ghost import GhostController
                from moe_emergence.model.spec import MoESpec

                self.ghost = GhostController.from_params(self.model, MoESpec.from_params(self.mp), seed=self.tp.seed)
        self.wake_events: list[dict] = []
        self.step0: dict[str, Any] = {}
        self.step = 0
        self.last_eval: dict[str, float] = {}
        self.eval_history: list[dict[str, float]] = []
        self.tokens_per_s: list[float] = []
        self._reset_window()

    # ------------------------------------------------------------------ state

    @property
    def state_path(self) -> Path:
        return self.spec.work_dir / "state.pt"

    @property
    def live_dir(self) -> Path:
        return self.spec.work_dir / "live"

    def _reset_window(self) -> None:
        self.win = {"loss": 0.0, "lm": 0.0, "lb": 0.0, "z": 0.0, "micro": 0, "tokens": 0, "time": 0.0}
        self.win_dom = np.zeros((len(self.train_set.domain_names), 2))
        self.window.reset()

    def save_state(self) -> None:
        state = {
            "version": STATE_VERSION,
            "fingerprint": json.dumps(self.spec.fingerprint(), sort_keys=True),
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": _rng_state(),
            "detector": json.dumps(self.detector.state_dict()),
            "ghost": json.dumps(self.ghost.state_dict()) if self.ghost else "",
            "wake_events": json.dumps(self.wake_events),
            "step0": json.dumps(self.step0),
            "eval_history": json.dumps(self.eval_history),
            "last_eval": json.dumps(self.last_eval),
            "tokens_per_s": json.dumps(self.tokens_per_s),
            # the logging window in progress: without it the first window after a resume
            # would cover fewer steps and log (and check for collapse) different values
            "window": {"scalars": json.dumps(self.win), "domains": torch.from_numpy(self.win_dom.copy()),
                       "router": self.window.state_dict()},
        }
        with atomic_path(self.state_path) as tmp:
            try:
                torch.save(state, tmp)
            except RuntimeError as e:  # torch reports a full disk as a RuntimeError
                raise OutputError(f"cannot write {self.state_path}: {e} (check free disk space)") from e

    def try_resume(self) -> bool:
        """Resume from the work dir's state when its fingerprint matches; start fresh otherwise."""
        work = self.spec.work_dir
        fp_file = work / "fingerprint.json"
        mine = self.spec.fingerprint()
        if fp_file.exists() and self.state_path.exists():
            theirs = json.loads(fp_file.read_text())
            if theirs != json.loads(json.dumps(mine)):
                keys = ", ".join(_diff_keys(theirs, json.loads(json.dumps(mine)))[:5])
                _log(f"[{self.spec.name}] not resuming {self.state_path}: its config differs ({keys}); starting fresh")
            else:
                try:
                    state = torch.load(self.state_path, map_location="cpu", weights_only=True)
                except Exception as e:
                    raise TrainingError(
                        f"resume checkpoint {self.state_path} is unreadable ({e}); delete {work} to start over"
                    ) from e
                if state.get("version") != STATE_VERSION or state.get("fingerprint") != json.dumps(
                    mine, sort_keys=True
                ):
                    raise TrainingError(f"resume checkpoint {self.state_path} does not match this run's config; "
                                        f"delete {work} to start over")
                self.model.load_state_dict(state["model"])
                self.opt.load_state_dict(state["optimizer"])
                self.sched.load_state_dict(state["scheduler"])
                _set_rng_state(state["rng"])
                self.detector.load_state_dict(json.loads(state["detector"]))
                if self.ghost and state["ghost"]:
                    self.ghost.load_state_dict(json.loads(state["ghost"]))
                self.wake_events = json.loads(state["wake_events"])
                self.step0 = json.loads(state["step0"])
                self.eval_history = json.loads(state["eval_history"])
                self.last_eval = json.loads(state["last_eval"])
                self.tokens_per_s = json.loads(state["tokens_per_s"])
                self.win = json.loads(state["window"]["scalars"])
                self.win_dom = state["window"]["domains"].numpy().copy()
                self.window.load_state_dict(state["window"]["router"])
                self.step = int(state["step"])
                self._trim_live(self.step)
                _log(f"[{self.spec.name}] resumed from {self.state_path} at step {self.step}")
                return True
        if self.dist.main:
            if work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True, exist_ok=True)
            fp_file.write_text(json.dumps(mine, indent=2, sort_keys=True))
        if self.dist.enabled:
            torch.distributed.barrier()
        return False

    def _trim_live(self, step: int) -> None:
        """Drop DVCLive rows logged after the resumed step (they will be logged again)."""
        for tsv in (self.live_dir / "plots").rglob("*.tsv") if self.live_dir.exists() else []:
            lines = tsv.read_text().splitlines()
            if not lines:
                continue
            head = lines[0].split("\t")
            si = head.index("step") if "step" in head else None
            keep = [lines[0]] + [ln for ln in lines[1:] if si is None or int(ln.split("\t")[si]) <= step]
            tsv.write_text("\n".join(keep) + "\n")

    # ------------------------------------------------------------------ loop

    def _micro_batch(self, step: int, micro: int) -> tuple[torch.Tensor, np.ndarray]:
        idx = self.plan.indices(step, micro)
        x = torch.from_numpy(self.train_set.ids[idx].astype(np.int64)).to(self.device, non_blocking=True)
        return x, self.train_set.domain_codes[idx]

    def train_step(self) -> None:
        tp, step = self.tp, self.step
        t0 = time.perf_counter()
        if self.moe:
            scale = noise_scale(step, tp.max_steps, self.mp.router_noise_anneal)
            for _, layer in moe_layers(self.model):
                layer.noise_scale = scale
            self.aux.start_step()
        self.opt.zero_grad(set_to_none=True)
        for m in range(tp.grad_accum):
            x, doms = self._micro_batch(step, m)
            sync = m == tp.grad_accum - 1 or not self.dist.enabled
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()
            with ctx:
                with self.autocast():
                    lm, per_seq = self.ddp(x)
                loss = lm
                lb = z = torch.zeros((), device=self.device)
                if self.moe:
                    lb, z = self.aux.compute(latest_routing(self.model))
                    loss = lm + self.mp.lb_coef * lb + self.mp.z_coef * z
                if not torch.isfinite(loss):
                    kept = self.state_path if self.state_path.exists() else "none yet"
                    raise TrainingError(
                        f"[{self.spec.name}] non-finite loss at step {step + 1} (lm={float(lm.detach()):.4g}, "
                        f"lb={float(lb.detach()):.4g}, z={float(z.detach()):.4g}); stopping. Last good resumable checkpoint: "
                        f"{kept}. Lower train.optim.lr or raise train.optim.warmup_frac."
                    )
                (loss / tp.grad_accum).backward()
            self.window.update(latest_routing(self.model))
            w = self.win
            w["loss"] += float(loss.detach())
            w["lm"] += float(lm.detach())
            w["lb"] += float(lb.detach())
            w["z"] += float(z.detach())
            w["micro"] += 1
            w["tokens"] += x.numel() * self.dist.world
            seq = per_seq.detach().double().cpu().numpy()
            np.add.at(self.win_dom[:, 0], doms, seq)
            np.add.at(self.win_dom[:, 1], doms, 1.0)
        if tp.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tp.optim.grad_clip)
        self.opt.step()
        self.sched.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.win["time"] += time.perf_counter() - t0
        self.step += 1

    def _window_metrics(self) -> dict[str, float]:
        w = self.win
        scal = torch.tensor([w["loss"], w["lm"], w["lb"], w["z"], float(w["micro"])], dtype=torch.float64)
        all_reduce_sum(scal)
        dom = all_reduce_sum(torch.from_numpy(self.win_dom.copy()))
        self.window.all_reduce()
        n = max(1.0, float(scal[4]))
        out = {
            "train/loss": float(scal[0]) / n,
            "train/lm_loss": float(scal[1]) / n,
            "train/lr": self.sched.get_last_lr()[0],
            "train/tokens_per_s": w["tokens"] / max(w["time"], 1e-9),
            "train/epoch": self.plan.epochs_at(self.step),
        }
        if self.moe:
            out["train/lb_loss"] = float(scal[2]) / n
            out["train/z_loss"] = float(scal[3]) / n
        for c, name in enumerate(self.train_set.domain_names):
            if dom[c, 1] > 0:
                out[f"train/lm_loss_{name}"] = float(dom[c, 0] / dom[c, 1])
        if self.moe:
            out.update(self.window.stats())
        return out

    def _window_to_main(self) -> None:
        """Under data parallel, move the window's sums to rank 0, the one that saves the state:
        after a resume the other ranks start from zero and the sums still add up."""
        if not self.dist.enabled:
            return
        w = self.win
        scal = all_reduce_sum(torch.tensor([w["loss"], w["lm"], w["lb"], w["z"], float(w["micro"])],
                                           dtype=torch.float64))
        dom = all_reduce_sum(torch.from_numpy(self.win_dom.copy()))
        self.window.all_reduce()
        if self.dist.main:
            w.update(loss=float(scal[0]), lm=float(scal[1]), lb=float(scal[2]), z=float(scal[3]), micro=int(scal[4]))
            self.win_dom = dom.numpy().copy()
        else:
            w.update(loss=0.0, lm=0.0, lb=0.0, z=0.0, micro=0)
            self.win_dom[:] = 0.0
            self.window.reset()

    def routing_at_step0(self) -> dict[str, Any]:
        """The untrained router's routing, before any update: on the eval set and on the batches
        of the first logging window (the tokens the first collapse check will see)."""
        bs = self.tp.eval_batch_size
        ev = route_only(self.model, (self.eval_set.ids[s : s + bs] for s in range(0, len(self.eval_set.ids), bs)),
                        self.device, self.autocast)
        first = (self.train_set.ids[self.plan.indices(step, m)]
                 for step in range(min(self.tp.log_every, self.tp.max_steps)) for m in range(self.tp.grad_accum))
        win = route_only(self.model, first, self.device, self.autocast)
        win.all_reduce()
        return {"eval": ev.layer_summary(), "train_window": win.layer_summary(), "train_window_stats": win.stats()}

    def run(self) -> dict[str, Any]:
        from dvclive import Live

        tp = self.tp
        resumed = self.try_resume()
        live = None
        if self.dist.main:
            live = Live(str(self.live_dir), dvcyaml=False, save_dvc_exp=False, resume=resumed, report=None)
        if self.moe and self.step == 0:
            self.step0 = self.routing_at_step0()
            for where in ("eval", "train_window"):
                parts = [f"layer {k.removeprefix('layer')}: top share {v['top_share']:.2f}, "
                         f"{v['live_experts']} live" for k, v in self.step0[where].items()]
                _log(f"[{self.spec.name}] step 0 routing on {where.replace('_', ' ')}: {'; '.join(parts)}")
            if live is not None:  # the router curves start at step 0, before any update
                live.step = 0
                for k, v in self.step0.pop("train_window_stats").items():
                    live.log_metric(k, v)
                live.next_step()
            else:
                self.step0.pop("train_window_stats")
        start_step = self.step
        t_start = time.perf_counter()
        stop = False
        while self.step < tp.max_steps and not stop:
            self.train_step()
            step = self.step
            final = step == tp.max_steps
            metrics: dict[str, float] = {}
            if step % tp.log_every == 0 or final:
                metrics = self._window_metrics()
                self.tokens_per_s.append(metrics["train/tokens_per_s"])
                if self.moe:
                    fr = self.window.fractions()
                    if self.detector.observe(step, fr, self.window.active()):
                        rec = self.detector.record
                        _log(f"[{self.spec.name}] collapse detected at step {step}: layer {rec.layer}, "
                             f"expert {rec.expert}, {rec.reason}"
                             + ("; stopping (train.collapse_stop)" if tp.collapse_stop else ""))
                        stop = tp.collapse_stop
                    if self.ghost:
                        for ev in self.ghost.observe(step, fr):
                            self.ghost.copy_optimizer_state(self.opt, ev)
                            self.wake_events.append(ev.to_dict())
                            _log(f"[{self.spec.name}] step {step}: ghost expert {ev.woken} of layer {ev.layer} "
                                 f"woken to relieve expert {ev.relieved} (share {ev.top_share:.3f})")
                    metrics["collapse/streak"] = float(self.detector.streak)
                self._progress(step, start_step, t_start, metrics)
                self._reset_window()
            if step % tp.eval_every == 0 or final or stop:
                ev = evaluate(self.model, self.eval_set.ids, self.eval_set.domain_codes,
                              self.eval_set.domain_names, tp.eval_batch_size, self.device, self.autocast)
                ev["step"] = float(step)
                self.last_eval = ev
                self.eval_history.append(ev)
                metrics.update({k: v for k, v in ev.items() if k.startswith("eval/")})
                metrics.update({f"eval/{k}": v for k, v in ev.items() if k.startswith("router/")})
                _log(f"[{self.spec.name}] eval @ {step}: lm_loss {ev['eval/lm_loss']:.4f} "
                     f"(macro {ev['eval/lm_loss_macro']:.4f})"
                     + (f", max top share {ev['router/max_share']:.3f}" if "router/max_share" in ev else ""))
            if live is not None and metrics:
                live.step = step
                for k, v in metrics.items():
                    # throughput goes to the log only: wall-clock in a curve would change the
                    # stage's outputs, and so dvc.lock, on every re-run of the same run
                    if math.isfinite(v) and k != "train/tokens_per_s":
                        live.log_metric(k, v)
                live.next_step()
            # the final model is published as such, so no snapshot duplicates it
            if self.dist.main and step % tp.snapshot_every == 0 and not (final or stop):
                save_model(self.model, self.spec.work_dir / "snapshots" / f"step_{step:06d}",
                           {"step": step, "variant": self.spec.name})
            if step % tp.resume_every == 0 and not final and not stop:
                self._window_to_main()
                if self.dist.main:
                    self.save_state()
        if live is not None:
            live.end()
        summary = self.summary()
        if self.dist.main:
            self._publish(summary)
        return summary

    def _progress(self, step: int, start: int, t0: float, m: dict[str, float]) -> None:
        if not self.dist.main:
            return
        done = step - start
        elapsed = time.perf_counter() - t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.tp.max_steps - step) / rate if rate > 0 else float("nan")
        extra = f" | top share {m['router/max_share']:.2f}" if "router/max_share" in m else ""
        _log(f"[{self.spec.name}] step {step}/{self.tp.max_steps} loss {m['train/loss']:.4f} "
             f"lm {m['train/lm_loss']:.4f} | {m['train/tokens_per_s']:.0f} tok/s | "
             f"{rate:.2f} steps/s, ETA {eta:.0f}s{extra}")

    def summary(self) -> dict[str, Any]:
        ev = self.last_eval
        rec = dataclasses.asdict(self.detector.record)
        out: dict[str, Any] = {
            "steps": self.step,
            "eval": {k.split("/", 1)[1]: v for k, v in ev.items() if k.startswith("eval/")},
            # throughput is in the log and the plots (train/tokens_per_s), not here: a metric
            # that changes on every re-run would make every `dvc metrics diff` show a change
            "train": {"tokens": self.step * self.tp.batch_size * self.tp.grad_accum
                      * int(self.train_set.ids.shape[1])},
            # where and how only when there was one: a -1 would read as a value in `metrics diff`
            "collapse": {"detected": int(rec["detected"]), **({k: rec[k] for k in (
                "step", "layer", "expert", "share", "live_experts")} if rec["detected"] else {})},
        }
        if self.moe:
            layers = {}
            for k, v in ev.items():
                if k.startswith("router/layer") and not k.split("/")[-1].startswith("load_e"):
                    _, lay, name = k.split("/")
                    layers.setdefault(lay, {})[name] = v
            out["router"] = {"max_share": ev.get("router/max_share", 0.0), **layers}
            out["ghost"] = {"wake_events": len(self.wake_events)}
            out["step0"] = {where: {k: {"top_share": v["top_share"], "live_experts": v["live_experts"]}
                                    for k, v in layers.items()} for where, layers in self.step0.items()}
        return out

    def _publish(self, summary: dict[str, Any]) -> None:
        """Assemble the declared outputs from the finished work dir, each complete or absent."""
        work = self.spec.work_dir
        # the sidecar records what the weights are, not how fast they were made (the summary has
        # no wall-clock figure): the same run gives the same bytes and the same DVC hash
        save_model(self.model, work / "final", {"step": self.step, "variant": self.spec.name,
                                                 "summary": summary})
        with atomic_dir(self.spec.model_out) as tmp:
            _link_tree(work / "final", tmp)
            if (work / "snapshots").exists():
                _link_tree(work / "snapshots", tmp / "snapshots")
            write_json(tmp / "events.json", {"collapse": dataclasses.asdict(self.detector.record),
                                             "step0": self.step0,
                                             "collapse_checks": self.detector.history,
                                             "ghost_wakes": self.wake_events,
                                             "eval_history": self.eval_history})
        with atomic_dir(self.spec.report_out) as tmp:
            if (self.live_dir / "plots").exists():
                shutil.copytree(self.live_dir / "plots", tmp / "plots")
            write_json(tmp / "metrics.json", summary)
        shutil.rmtree(work, ignore_errors=True)
        ev = summary["eval"]
        tps = float(np.median(self.tokens_per_s)) if self.tokens_per_s else 0.0
        _log(f"[{self.spec.name}] done: {self.step} steps ({tps:,.0f} tok/s median), "
             f"eval lm_loss {ev.get('lm_loss', float('nan')):.4f}, "
             f"collapse {'detected at step ' + str(summary['collapse']['step']) if summary['collapse']['detected'] else 'not detected'}"
             f"; model in {self.spec.model_out}, metrics in {self.spec.report_out / 'metrics.json'}")


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy, across devices) every file of `src` into `dst`."""
    for f in src.rglob("*"):
        target = dst / f.relative_to(src)
        if f.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
