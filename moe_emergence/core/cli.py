"""What every stage command shares: one-line errors instead of bare tracebacks, a tuned allocator."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from moe_emergence.core.allocator import keep_freed_memory
from moe_emergence.core.atomic import OutputError
from moe_emergence.core.config import ParamsError
from moe_emergence.core.errors import StageError

# Error classes of the package's concerns that mean bad input or environment. They are
# looked up only in modules already imported: an error cannot come from a module that
# never loaded, and importing the trainer to name its error would make every stage's
# command depend on the whole training package.
_ERROR_CLASSES = (
    ("moe_emergence.core.errors", "DataError"),
    ("moe_emergence.training.trainer", "TrainingError"),
    ("moe_emergence.model.checkpoint", "CheckpointError"),
)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or environment: reported in one line, exit code 2."""
    # OSError: a full disk, a missing permission, a file in the way; its message names the path
    errors: list[type[BaseException]] = [ParamsError, OutputError, StageError, OSError]
    for module, name in _ERROR_CLASSES:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            errors.append(cls)
    return tuple(errors)


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's main; expected errors print `<stage>: error: <cause>` and exit 2.

    Set MOE_DEBUG=1 to see the full traceback as well. A stage process (`python -m
    stages.<name>`, not a test calling this) that loaded torch leaves without the
    interpreter's teardown (freeing torch's and transformers' modules takes about 2 s,
    BENCHMARKS.md): by then its outputs are published and its output is flushed.
    """
    keep_freed_memory()
    try:
        main()
    except expected_errors() as e:
        if os.environ.get("MOE_DEBUG"):
            raise
        cause = " ".join(str(e).split())  # one line, whatever the underlying library wrote
        print(f"{name}: error: {cause}", file=sys.stderr)
        _leave(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; nothing partial was published (re-run to resume)", file=sys.stderr)
        _leave(130)
    _leave(0)


def _leave(code: int) -> None:
    argv = getattr(sys, "orig_argv", [])  # the interpreter's own command line
    own = "-m" in argv[:-1] and argv[argv.index("-m") + 1].startswith("stages.")
    if own and "torch" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        sys.exit(code)


def relaunch(nproc: int, module: str, argv: list[str]) -> bool:
    """Run `python -m <module> <argv>` as `nproc` data-parallel processes on this machine.

    Returns False, doing nothing, for one process or when already under a launcher
    (`torchrun` sets WORLD_SIZE; multi-node runs call torchrun themselves, see README).
    A failed rank has printed its own one-line error; the launcher's traceback is not shown.
    """
    if nproc <= 1 or "WORLD_SIZE" in os.environ:
        return False
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", module, *argv])
    except ChildFailedError as e:
        rank, failure = next(iter(e.failures.items()))
        raise StageError(f"rank {rank} of {nproc} processes (train.nproc) exited with code {failure.exitcode}; "
                         "its error is above") from None
    return True
