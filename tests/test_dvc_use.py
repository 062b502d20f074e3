"""DVC as a researcher uses it beyond `dvc repro`: queued experiments, several processes,
local input files, the plots. Each on a copy of the tiny finished pipeline."""

from __future__ import annotations

import json
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.pipeline_repo import DVC, copy_repo, run


@pytest.mark.slow
def test_a_queued_experiment_runs_the_code_it_was_queued_with(finished_repo, tmp_path):
    """`dvc exp run --queue` snapshots the code: an edit made after queueing is not what runs.
    The edit is to the sample stage's module, and the queued experiment reproduces `sample`."""
    repo = copy_repo(finished_repo[0], tmp_path / "repo")
    module = repo / "moe_emergence/data/sample.py"
    original = module.read_text()
    module.write_text(original + '\nimport sys\n\nprint("MARKER-A", file=sys.stderr)\n')
    run([DVC, "exp", "run", "--queue", "-n", "queued-a", "sample"], repo)
    module.write_text(original + '\nimport sys\n\nprint("MARKER-B", file=sys.stderr)\n')  # edited after queueing
    run([DVC, "queue", "start"], repo)
    deadline = time.time() + 900
    while time.time() < deadline:
        status = run([DVC, "queue", "status"], repo).stdout
        if "Running" not in status and "Queued" not in status:
            break
        time.sleep(4)  # each `dvc queue status` costs a second of CPU
    assert "Success" in status, status
    logs = run([DVC, "queue", "logs", "queued-a"], repo).stdout
    assert "Running stage 'sample'" in logs and "Running stage 'pack'" not in logs, logs[-3000:]
    assert "MARKER-A" in logs and "MARKER-B" not in logs, logs[-3000:]


@pytest.mark.slow
def test_train_nproc_runs_data_parallel_with_the_same_global_batch(finished_repo, tmp_path):
    """`--processes 2` (train.nproc) relaunches the stage under torchrun: two ranks, each half the
    batch, all-reduced gradients and aux losses: the MoE model of one process, up to float sums."""
    repo = copy_repo(finished_repo[0], tmp_path / "repo")
    r = run(["python", "-m", "stages.train", "--processes", "2", "--variant", "moe", "--seed", "0",
             "--model-out", "two/model", "--report-out", "two/report", "--work-root", "two/work"], repo)
    two = json.loads((repo / "two/report/metrics.json").read_text())
    one = json.loads((repo / "reports/train/moe/seed0/metrics.json").read_text())
    assert two["steps"] == one["steps"] and two["train"]["tokens"] == one["train"]["tokens"]
    assert two["eval"]["lm_loss"] == pytest.approx(one["eval"]["lm_loss"], rel=1e-4), r.stderr[-2000:]
    a = load_file(repo / "two/model/model.safetensors")
    b = load_file(repo / "models/moe/seed0/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_editing_a_local_input_file_reruns_fetch(finished_repo, tmp_path):
    repo = copy_repo(finished_repo[0], tmp_path / "repo")
    records = [{"question": f"What is {i} times {i + 3}? Show the steps of the product.",
                "answer": f"{i} times {i + 3} is {i * (i + 3)}, since {i} groups of {i + 3} make {i * (i + 3)}."}
               for i in range(400)]
    (repo / "inputs/math.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["sources"]["math"] = {"kind": "local", "path": "inputs/math.jsonl",
                                         "template": "{question}\n\n{answer}"}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([DVC, "repro", "-s", "fetch"], repo)
    assert "fetch" not in json.loads(run([DVC, "status", "--json"], repo).stdout)
    with open(repo / "inputs/math.jsonl", "a") as f:
        f.write(json.dumps({"question": "What is 1 + 1? Explain.", "answer": "1 + 1 is 2, one and one."}) + "\n")
    assert "fetch" in json.loads(run([DVC, "status", "--json"], repo).stdout)


@pytest.mark.slow
def test_the_plots_follow_the_runs_and_have_points(finished_repo, tmp_path):
    repo = copy_repo(finished_repo[0], tmp_path / "repo")
    out = json.loads(run([DVC, "plots", "show", "--json"], repo).stdout)["data"]
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    ids = [next(iter(p)) for p in spec["plots"]]
    series = {}
    for pid in ids:
        [plot] = out[pid]
        points = plot["content"]["data"]["values"]
        assert points, pid
        series[pid] = {p["series"] for p in points}
    assert series["train_lm_loss"] == {"dense seed0", "moe seed0", "no_lb seed0"}
    assert series["router_top_share"] == {"moe seed0 layer1", "no_lb seed0 layer1"}  # the tiny profile's MoE layer
    # a handful of titled plots, not one per DVCLive file
    vega = [k for k, v in out.items() if any(p.get("type") == "vega" for p in v)]
    assert sorted(vega) == sorted(ids)
