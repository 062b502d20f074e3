"""Progress of long phases on stderr: a tqdm bar with rate and ETA, shown once a phase has
taken a few seconds (a short one prints nothing); an update every 10 s when stderr is not a
terminal (a CI log). MOE_PROGRESS=0 silences it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    quiet = os.environ.get("MOE_PROGRESS", "1") == "0"
    tty = sys.stderr.isatty()
    yield from tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, disable=quiet, leave=False, delay=3.0,
                    mininterval=0.5 if tty else 10.0, dynamic_ncols=tty, ascii=not tty)
