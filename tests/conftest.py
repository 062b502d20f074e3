"""Session-wide fixtures: one tiny finished pipeline, copied by the tests that change it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from tests.pipeline_repo import DVC, make_repo, run, tiny_model

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # `make test` runs one worker per core: one thread each (in here and in the stages the
    # tests start) instead of every worker's torch competing for all the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


# The files of longest run first, so that `make test`'s two workers finish together: the
# two that build a pipeline of their own (the shared tiny one, the GPT-2 profile's) start at
# once, then the longest of those that copy the shared one (seconds on this 2-core box).
LONGEST_FIRST = ("test_bad_input.py", "test_gpt2_profile.py", "test_faults.py", "test_reproducible.py",
                 "test_dvc_use.py", "test_pipeline.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        top = item.path.parent.name == "tests"  # tests/test_pipeline.py, not tests/data/test_pipeline.py
        return LONGEST_FIRST.index(name) if top and name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def finished_repo(tmp_path_factory, worker_id) -> tuple[Path, str]:
    """A throwaway git+DVC repo on the tiny profile after a full `dvc repro`, committed.

    Returns the path and the stdout of that first `dvc repro`. Built once per test run, the
    `make test` workers share it (the first to ask builds it under a file lock), so tests
    must not change it, nor run DVC in it: they work on `copy_repo(...)`.
    """
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # the workers' base temps share this parent
    done = root / "finished" / "first_repro.txt"
    with FileLock(str(root / "finished.lock")):
        if not done.exists():
            repo = make_repo(root / "finished" / "repo", tiny_model)
            first = run([DVC, "repro"], repo)
            run(["git", "add", "-A"], repo)
            run(["git", "commit", "-qm", "finished run"], repo)
            done.write_text(first.stdout)  # last: a build that failed half-way is not taken for done
    return root / "finished" / "repo", done.read_text()
