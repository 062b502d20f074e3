"""Faults a user meets: `dvc repro` killed (SIGKILL) in the middle of a stage, corrupt or
truncated inputs, outputs that cannot be written. Nothing partial may be taken for
finished, a killed training resumes from its checkpoint to the uninterrupted result,
and every failure is one line naming the file and what to do."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.pipeline_repo import DVC, copy_repo, env, run, stage_here

# Loaded by every Python process of the killed run (PYTHONPATH): when MOE_TEST_PAUSE names
# a point, the stage writes a marker there and sleeps, so that the test kills it exactly there.
HOOK = '''
import os, sys
_where = os.environ.get("MOE_TEST_PAUSE", "")
# stages run as `python -m stages.<name>`: argv[0] is still "-m" while site runs, orig_argv is whole
_cmd = " ".join(getattr(sys, "orig_argv", sys.argv))


def _pause(info):
    import time
    from pathlib import Path
    Path(os.environ["MOE_TEST_MARKER"]).write_text(info)
    time.sleep(600)


if _where == "pack" and "stages.pack" in _cmd:
    import contextlib
    from pathlib import Path
    import moe_emergence.core.atomic as _atomic
    _orig = _atomic.atomic_dir

    @contextlib.contextmanager
    def _paused(path):
        with _orig(path) as tmp:
            yield tmp
            if Path(path).name == "packed":  # every file written, not yet renamed into place
                _pause(str(tmp))

    _atomic.atomic_dir = _paused
elif _where.startswith("train:") and "stages.train" in _cmd:
    _, _variant, _step = _where.split(":")
    import moe_emergence.training.trainer as _tr
    _save = _tr.Trainer.save_state

    def _save_then_pause(self):
        _save(self)
        if self.spec.name == _variant and self.step == int(_step):
            _pause(str(self.state_path))

    _tr.Trainer.save_state = _save_then_pause
'''


def ran(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", stdout))


def kill_at(repo: Path, args: list[str], pause: str, tmp: Path) -> str:
    """Start `args` in `repo`, wait until the stage reaches `pause`, SIGKILL the whole process group."""
    hooks = tmp / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(HOOK)
    marker = tmp / "paused"
    marker.unlink(missing_ok=True)
    e = env(repo)
    e.update(PYTHONPATH=f"{repo}{os.pathsep}{hooks}", MOE_TEST_PAUSE=pause, MOE_TEST_MARKER=str(marker))
    proc = subprocess.Popen(args, cwd=repo, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"{args} ended before reaching {pause}:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{args} never reached {pause}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return marker.read_text()


def lock_outs(repo: Path, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]
    return {o["path"]: o.get("md5") for o in lock.get("outs", [])}


@pytest.mark.slow
def test_sigkill_during_pack_publishes_nothing_and_a_rerun_restores_the_same_data(finished_repo, tmp_path):
    before = lock_outs(finished_repo[0], "pack")
    repo = copy_repo(finished_repo[0], tmp_path / "repo", forget=("pack",))
    shutil.rmtree(repo / "data/packed")  # as if the first run never got this far
    tmp_out = repo / kill_at(repo, [DVC, "repro"], "pack", tmp_path)

    # killed with every file written to the temporary directory, before the rename
    assert tmp_out.name.startswith(".packed.") and any(tmp_out.iterdir())
    assert not (repo / "data/packed").exists()  # nothing under the output's name
    status = run([DVC, "status", "pack"], repo)
    assert "pack" in status.stdout and "changed" in status.stdout  # DVC knows the stage is unfinished

    again = run([DVC, "repro"], repo)
    # the re-run packs again (same bytes, same hash), so nothing downstream re-runs
    assert ran(again.stdout) == {"pack"}, again.stdout
    assert lock_outs(repo, "pack") == before
    assert not list((repo / "data").glob(".packed.*.tmp"))  # the killed run's temporary was swept


@pytest.mark.slow
def test_sigkill_during_training_resumes_to_the_uninterrupted_result(finished_repo, tmp_path):
    src = finished_repo[0]
    repo = copy_repo(src, tmp_path / "repo", forget=("train@moe-0",))
    shutil.rmtree(repo / "models/moe/seed0")  # as if the first run never got this far
    state = repo / kill_at(repo, [DVC, "repro"], "train:moe/seed0:2", tmp_path)

    assert state == repo / ".cache/runs/moe/seed0/state.pt" and state.exists()
    assert not (repo / "models/moe/seed0").exists()  # no half-trained model under the output's name
    assert not (repo / "reports/train/moe/seed0/metrics.json").exists()

    again = run([DVC, "repro"], repo)
    log = again.stdout + again.stderr
    assert "train@moe-0" in ran(again.stdout)
    assert not ran(again.stdout) & {"fetch", "split", "sample", "pack", "base", "train_dense@0", "train@no_lb-0"}
    assert "resumed from" in log and "at step 2" in log, log

    resumed = json.loads((repo / "reports/train/moe/seed0/metrics.json").read_text())
    uninterrupted = json.loads((src / "reports/train/moe/seed0/metrics.json").read_text())
    assert resumed["steps"] == uninterrupted["steps"]
    for k, v in uninterrupted["eval"].items():
        assert resumed["eval"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert resumed["collapse"] == uninterrupted["collapse"]
    a = load_file(repo / "models/moe/seed0/model.safetensors")
    b = load_file(src / "models/moe/seed0/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert not (repo / ".cache/runs/moe/seed0").exists()  # the work dir is gone once the outputs are published


def stage(repo: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    return stage_here(repo, ["python", "-m", f"stages.{script}", *args])


def one_line_error(r: subprocess.CompletedProcess, name: str, *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith(f"{name}: error: ")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


@pytest.mark.slow
def test_truncated_arrow_file_is_a_clear_error(finished_repo, tmp_path):
    repo = copy_repo(finished_repo[0], tmp_path / "repo")
    packed = tmp_path / "packed"
    packed.mkdir()
    for f in (repo / "data/packed").iterdir():
        data = f.read_bytes()
        (packed / f.name).write_bytes(data[: len(data) // 2] if f.name == "train.arrow" else data)
    r = stage(repo, "train", "--variant", "moe", "--seed", "0", "--packed", str(packed), "--model-out", "x/m", "--report-out", "x/r")
    one_line_error(r, "train", str(packed / "train.arrow"), "dvc repro -s -f pack")
    assert not (repo / "x").exists()


@pytest.mark.slow
def test_corrupt_checkpoints_are_clear_errors(finished_repo, tmp_path):
    repo = copy_repo(finished_repo[0], tmp_path / "repo")
    base = tmp_path / "base"
    base.mkdir()
    for f in (repo / "models/base").iterdir():
        if f.is_file():
            data = f.read_bytes()
            (base / f.name).write_bytes(data[: len(data) // 3] if f.suffix == ".safetensors" else data)
    r = stage(repo, "train", "--variant", "moe", "--seed", "0", "--base", str(base), "--model-out", "x/m", "--report-out", "x/r")
    one_line_error(r, "train", str(base / "model.safetensors"), "corrupt")

    # a resumable state that matches the config but cannot be read
    kill_at(repo, [DVC, "repro", "-f", "-s", "train@moe-0"], "train:moe/seed0:2", tmp_path)
    state = repo / ".cache/runs/moe/seed0/state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    r = stage(repo, "train", "--variant", "moe", "--seed", "0")
    one_line_error(r, "train", str(Path(".cache/runs/moe/seed0/state.pt")), "delete")
    assert not (repo / "models/moe/seed0").exists()


@pytest.mark.slow
def test_unwritable_output_names_the_path(finished_repo, tmp_path):
    repo = copy_repo(finished_repo[0], tmp_path / "repo")
    (tmp_path / "blocker").write_text("a file where a directory should be")
    out = tmp_path / "blocker" / "packed"
    r = stage(repo, "pack", "--sampled", "data/sampled", "--out", str(out), "--report", "x/p.json",
              "--report-dir", "x")
    one_line_error(r, "pack", str(out))


def _mount_tiny_tmpfs(where: Path) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True)
    return r.returncode == 0


@pytest.mark.slow
def test_full_disk_names_the_path(finished_repo, tmp_path):
    """A real ENOSPC on a 256 KiB tmpfs (needs root and mount; skipped elsewhere)."""
    full = tmp_path / "full"
    if not _mount_tiny_tmpfs(full):
        pytest.skip("needs root and tmpfs to make a full disk")
    try:
        repo = copy_repo(finished_repo[0], tmp_path / "repo")
        r = stage(repo, "train", "--variant", "moe", "--seed", "0", "--model-out", str(full / "m"), "--report-out",
                  str(full / "r"), "--work-root", str(full / "work"))
        err = one_line_error(r, "train", str(full))
        assert "space" in err.lower(), err
        r = stage(repo, "pack", "--sampled", "data/sampled", "--out", str(full / "packed"),
                  "--report", str(full / "p.json"), "--report-dir", str(full / "rep"))
        err = one_line_error(r, "pack", str(full))
        assert "space" in err.lower(), err
        assert not (full / "packed").exists() and not (full / "m").exists()
    finally:
        subprocess.run(["umount", str(full)], check=False)
