"""The built-in sample: a synthetic dataset generated once into a cache folder and served as a store.

``open_dataset(None)`` (or ``"sample"``) serves a BigEarthNet-style sample, ``"sample:sen12ms"`` a
SEN12MS-style one. Generation writes the synthetic dataset in the real on-disk layout
(:mod:`fusmae_fast.data.synthetic`), reads it back with the real reader and packs it into a store
(:mod:`fusmae_fast.data.packing`), so the sample exercises the same code as real data; the raw files
are then deleted. The store is deterministic (same sizes and seed -> same bytes, same checksum).

Cache folder: ``$FUSMAE_CACHE``, else ``$XDG_CACHE_HOME/fusmae_fast``, else ``~/.cache/fusmae_fast``;
the sample lives in ``sample-v<N>-<kind>-<train>-<val>-<test>-seed<S>/``. Concurrent processes (DDP
ranks, pytest workers) serialise on an ``flock`` of a lock file beside it; the one holding the lock
generates into a temporary folder and renames it into place, the others then find it complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fusmae_fast.data.store import is_store

SAMPLE_VERSION = 3
DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {"bigearthnet": (256, 64, 64), "sen12ms": (128, 32, 32)}
"""(train, validation, test) patches of each built-in sample."""
KINDS: tuple[str, ...] = tuple(DEFAULT_SIZES)


def cache_dir() -> Path:
    """Where built-in samples are kept (see module docstring)."""
    if os.environ.get("FUSMAE_CACHE"):
        return Path(os.environ["FUSMAE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fusmae_fast"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``path`` (blocking)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def builtin_sample(
    kind: str = "bigearthnet",
    *,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    cache: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> Path:
    """The store folder of a built-in sample, generating it first if needed (see module docstring).

    A split of size 0 (``n_val=0``, ``n_test=0``) is not in the store.
    """
    if kind not in DEFAULT_SIZES:
        raise ValueError(f"unknown built-in sample {kind!r}; choose one of {KINDS}")
    d = DEFAULT_SIZES[kind]
    counts = (
        d[0] if n_train is None else int(n_train),
        d[1] if n_val is None else int(n_val),
        d[2] if n_test is None else int(n_test),
    )
    if min(counts) < 0 or counts[0] < 1:
        raise ValueError(f"built-in sample sizes must be >= 0 with a non-empty train split, got {counts}")
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    final = root / f"sample-v{SAMPLE_VERSION}-{kind}-{counts[0]}-{counts[1]}-{counts[2]}-seed{seed}"
    if is_store(final):
        return final
    with _locked(root / f".{final.name}.lock"):
        if is_store(final):  # another process made it while we waited
            return final
        if final.exists():  # a leftover that is not a complete store
            shutil.rmtree(final)
        tmp = root / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # we hold the lock: nobody else is writing there
        t0 = time.perf_counter()
        print(
            f"[fusmae-fast] generating the built-in {kind} sample {counts} once into {final}", file=sys.stderr
        )
        w = workers if workers is not None else (2 if (os.cpu_count() or 1) >= 2 else 0)
        _generate(kind, counts, seed, tmp, w)
        os.rename(tmp / "store", final)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"[fusmae-fast] built-in sample ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return final


def _generate(kind: str, counts: tuple[int, int, int], seed: int, tmp: Path, workers: int) -> None:
    from fusmae_fast.data.bigearthnet import BigEarthNetV1
    from fusmae_fast.data.packing import pack
    from fusmae_fast.data.raw_dataset import RawDataset
    from fusmae_fast.data.sen12ms import SEN12MS
    from fusmae_fast.data.splits import SPLITS
    from fusmae_fast.data.synthetic import write_bigearthnet_v1, write_sen12ms

    raw = tmp / "raw"
    sources: list[tuple[str, RawDataset]] = []
    splits = [
        (split, short) for split, short, n in zip(SPLITS, ("train", "val", "test"), counts, strict=True) if n
    ]
    if kind == "bigearthnet":
        write_bigearthnet_v1(raw, counts=counts, seed=seed, workers=workers)
        for split, short in splits:
            ds = BigEarthNetV1(
                raw / "BigEarthNet-v1.0", raw / "BigEarthNet-S1-v1.0", raw / "splits" / f"{short}.csv"
            )
            sources.append((split, ds))
    else:
        write_sen12ms(raw, counts=counts, seed=seed, workers=workers)
        sources = [(split, SEN12MS(raw, split=split)) for split, _ in splits]
    pack(
        sources,
        tmp / "store",
        workers=workers,
        progress=False,
        verify_samples=8,
        description={"builtin_sample": kind, "counts": list(counts), "seed": seed, "version": SAMPLE_VERSION},
    )
