"""The tqdm progress bar of pretraining and evaluation: shown only when asked for and on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], *, enabled: bool, desc: str, total: int | None = None) -> Iterable[T]:
    """``iterable`` wrapped in a transient tqdm bar when ``enabled`` and stderr is a TTY, else unchanged."""
    if not (enabled and sys.stderr.isatty()):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False)
