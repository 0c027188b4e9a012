"""Split names and the small text files that list patches (split lists, exclusion lists)."""

from __future__ import annotations

import os
from pathlib import Path

from fusmae_fast.data.errors import DatasetError, MissingDataError

SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""Canonical split names, in the order a packed store holds them."""

_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "all": "all",
}


def canonical_split(split: str) -> str:
    """'train' | 'validation' (also 'val') | 'test' | 'all' -> canonical name; ValueError otherwise."""
    key = str(split).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown split {split!r}; use one of train, validation (val), test, all")
    return _ALIASES[key]


def read_rows(path: str | os.PathLike[str]) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-empty line of a text/CSV file, split on commas (fields
    stripped). Missing file: named error."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{path}: missing file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable ({e})") from e
    return [
        (n, [f.strip() for f in line.split(",")])
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip()
    ]


def read_name_list(path: str | os.PathLike[str], prefix: str = "") -> list[tuple[int, str]]:
    """(line number, first field) of every line: a patch name per line, optionally ``name,other``.

    With ``prefix``, a first line whose first field does not start with it is taken as a header and
    skipped; a later such line is an error naming the file and line.
    """
    out = []
    for i, (line, row) in enumerate(read_rows(path)):
        name = row[0]
        if prefix and not name.startswith(prefix):
            if i == 0:
                continue
            raise DatasetError(f"{path}: line {line}: {name!r} is not a patch name (expected {prefix}...)")
        out.append((line, name))
    return out


def check_not_empty(path: str | os.PathLike[str], entries: list[object]) -> None:
    """A split list must list at least one patch: an empty one (e.g. a truncated download) would
    silently empty its split, or move its patches into another."""
    if not entries:
        raise DatasetError(f"{path}: the split list lists no patch (empty file); list the split's patches")
