"""Dataset readers, the packed store and the synthetic sample writer (no model, no ops).

Entry point: :func:`open_dataset`. Readers: :class:`BigEarthNetV1`, :class:`BigEarthNetV2`,
:class:`SEN12MS`; fast format: :class:`PackedDataset` (written by ``fusmae-fast convert``, see
:mod:`fusmae_fast.data.packing`); synthetic data in the real layouts: :mod:`fusmae_fast.data.synthetic`.
Patches a dataset lists wrongly (twice, in two splits, with a missing file) and ``--skip-bad``:
:mod:`fusmae_fast.data.bad_patches`; checking a store's files: ``fusmae-fast verify``
(:mod:`fusmae_fast.data.verify`).
"""

from fusmae_fast.data.autodetect import open_dataset
from fusmae_fast.data.bigearthnet import BigEarthNetV1, BigEarthNetV2
from fusmae_fast.data.builtin import builtin_sample
from fusmae_fast.data.errors import DatasetError, MissingDataError
from fusmae_fast.data.sen12ms import SEN12MS
from fusmae_fast.data.store import PackedDataset

__all__ = [
    "BigEarthNetV1",
    "BigEarthNetV2",
    "DatasetError",
    "MissingDataError",
    "PackedDataset",
    "SEN12MS",
    "builtin_sample",
    "open_dataset",
]
