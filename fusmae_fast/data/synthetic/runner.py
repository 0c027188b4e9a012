"""What every synthetic writer shares: the split sizes, the run over planned patches, the manifest.

A writer plans its patches (one record per patch, with an ``index`` and a ``role``: its split, or
an extra such as 'unlabelled'), then :func:`run_patches` writes them, in worker processes when asked,
and the writer returns a :class:`Manifest` of what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusmae_fast.data.geotiff import gdal_env

WritePatch = Callable[[Path, Any, int], Any]
"""``write_patch(root, patch, seed)``: writes one planned patch's files, returns its arrays."""


@dataclass
class Manifest:
    """What a writer wrote (for tests and the sample-data command)."""

    format: str
    """The format written (one of ``fusmae_fast.data.synthetic.FORMATS``)."""
    root: str
    """The folder written into."""
    splits: dict[str, list[str]] = field(default_factory=dict)
    """Split name -> names of the patches in it (the readers' ``names``, in order)."""
    unlabelled: list[str] = field(default_factory=list)
    """Patches written with no 19-class / no valid IGBP label (the readers skip them)."""
    snow: list[str] = field(default_factory=list)
    """BigEarthNet patches listed (v1) or flagged (v2) as having seasonal snow."""
    cloud: list[str] = field(default_factory=list)
    """BigEarthNet patches listed (v1) or flagged (v2) as having cloud or shadow."""
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)
    """With ``return_arrays``: name -> {'s2': tuple of groups, 's1': array, 'label': ...} as written."""


def split_counts(n: int) -> tuple[int, int, int]:
    """(train, validation, test) sizes for ``n`` patches: 4 : 1 : 1 (384 -> 256, 64, 64)."""
    if n < 1:
        raise ValueError(f"need at least 1 patch, got {n}")
    return n - 2 * (n // 6), n // 6, n // 6


def plan_counts(n: int, counts: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """The split sizes a writer plans: ``counts`` (checked) when given, else :func:`split_counts`."""
    if counts is None:
        return split_counts(n)
    if len(counts) != 3 or min(counts) < 0 or sum(counts) < 1:
        raise ValueError(f"counts must be 3 non-negative split sizes with a positive sum, got {counts}")
    return tuple(int(c) for c in counts)  # type: ignore[return-value]


def run_patches(
    write_patch: WritePatch,
    root: Path,
    plan: list[Any],
    seed: int,
    workers: int,
    progress: bool,
    calibrate: Callable[[], Any],
) -> list[Any]:
    """Write every planned patch (in worker processes when ``workers`` > 1); results in plan order.

    ``calibrate()`` runs first, in this process, so that the content model's calibration is computed
    once and inherited by forked workers.
    """
    from tqdm import tqdm

    calibrate()
    bar = tqdm(total=len(plan), desc="writing synthetic patches", disable=not progress, leave=False)
    if workers <= 1:
        out = []
        with gdal_env():
            for p in plan:
                out.append(write_patch(root, p, seed))
                bar.update()
        bar.close()
        return out
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    chunks = [plan[i::workers] for i in range(workers)]
    results: dict[int, Any] = {}
    with ctx.Pool(workers) as pool:
        for part in pool.imap_unordered(_write_chunk, [(write_patch, root, c, seed) for c in chunks]):
            for idx, r in part:
                results[idx] = r
            bar.update(len(part))
    bar.close()
    return [results[p.index] for p in plan]


def _write_chunk(args: tuple[WritePatch, Path, list[Any], int]) -> list[tuple[int, Any]]:
    """One worker's share of the plan: (patch index, arrays) per patch."""
    write_patch, root, plan, seed = args
    with gdal_env():
        return [(p.index, write_patch(root, p, seed)) for p in plan]
