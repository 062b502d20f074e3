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

    Set MOE_DEBUG=1 to see the full traceback as well.
    """
    keep_freed_memory()
    try:
        main()
    except expected_errors() as e:
        if os.environ.get("MOE_DEBUG"):
            raise
        cause = " ".join(str(e).split())  # one line, whatever the underlying library wrote
        print(f"{name}: error: {cause}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; nothing partial was published (re-run to resume)", file=sys.stderr)
        sys.exit(130)


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
