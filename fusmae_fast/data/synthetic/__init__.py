"""Tiny datasets written in exactly the real on-disk formats, with label-dependent content.

Writers: :func:`write_bigearthnet_v1`, :func:`write_bigearthnet_v2`, :func:`write_sen12ms` (and
:func:`write_sample` to pick one by format name). They produce the layouts the readers expect
(docs/design.md §5): folder and file names (S2 names with a one-digit hour for part of them), band
files at native resolution and dtype (uint16 S2, float32 dB S1, 4-layer uint16 LC), GeoTIFFs with a
UTM CRS, the metadata JSONs / parquet / split files of each format. Everything is a function of
(seed, patch index): same arguments, same bytes.

Modules: :mod:`~fusmae_fast.data.synthetic.content` (the content model: per-class signatures and
textures, z-scores -> raw units), :mod:`~fusmae_fast.data.synthetic.runner` (split sizes, the run
over planned patches in worker processes, the :class:`Manifest`), one module per format
(``bigearthnet_v1``, ``bigearthnet_v2``, ``sen12ms``), and
:mod:`~fusmae_fast.data.synthetic.bigearthnet` for what the two BigEarthNet versions share (the patch
plan, the rendering, the names, the band files).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from fusmae_fast.data.synthetic.bigearthnet_v1 import write_bigearthnet_v1
from fusmae_fast.data.synthetic.bigearthnet_v2 import write_bigearthnet_v2
from fusmae_fast.data.synthetic.content import ContentModel
from fusmae_fast.data.synthetic.runner import Manifest, split_counts
from fusmae_fast.data.synthetic.sen12ms import write_sen12ms

_WRITERS: dict[str, Callable[..., Manifest]] = {
    "bigearthnet-v1": write_bigearthnet_v1,
    "bigearthnet-v2": write_bigearthnet_v2,
    "sen12ms": write_sen12ms,
}

FORMATS: tuple[str, ...] = tuple(_WRITERS)
"""The formats :func:`write_sample` writes (the ``--format`` choices of ``fusmae-fast sample-data``)."""


def write_sample(
    root: str | os.PathLike[str], fmt: str, n: int, *, seed: int = 0, workers: int = 1, progress: bool = False
) -> Manifest:
    """Write a sample of format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in _WRITERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    return _WRITERS[fmt](root, n, seed=seed, workers=workers, progress=progress)


__all__ = [
    "FORMATS",
    "ContentModel",
    "Manifest",
    "split_counts",
    "write_bigearthnet_v1",
    "write_bigearthnet_v2",
    "write_sample",
    "write_sen12ms",
]
