"""The packed store: a dataset as memory-mappable ``.npy`` arrays plus a JSON index.

Written once by ``fusmae-fast convert`` (:mod:`fusmae_fast.data.packing`), read by
:class:`PackedDataset`. A store folder holds::

    index.json      format/version, kind, sample count, splits, S2 layout, array table (file, dtype,
                    shape, sha256, bytes), label vocabulary, per-band statistics, source, skipped
                    counts and skipped patches, bytes per sample, and a checksum over all arrays
    s2_g<k>.npy     (n, bands_k, size_k, size_k) uint16 — S2 raw values per native-resolution group
                    (BigEarthNet: 10 m 4x120x120, 20 m 6x60x60, 60 m 2x20x20; SEN12MS: 12x256x256)
    s1.npy          (n, 2, N, N) float32 or float16 — S1 dB as read
    labels.npy      (n, 19) uint8 multi-hot (BigEarthNet) or (n,) int64 class ids (SEN12MS)
    names.npy       (n,) fixed-width ASCII patch names
    split.npy       (n,) uint8 index into index["split_names"]
    geo_epsg.npy    (n,) int32 EPSG code of each patch's CRS, 0 for none   (index["georeference"])
    geo_bounds.npy  (n, 4) float64 left, bottom, right, top in that CRS  (index["georeference"])
    s1_names.npy    (n,) fixed-width ASCII S1 patch names                  (index["s1_names"])

Georeference: each patch's CRS and bounds as its reader's ``georeference`` gives them (the reference
GeoTIFF: BigEarthNet's S2 band B02, SEN12MS's S2 file), recorded in their own index section (file,
dtype, shape, sha256, bytes per array), outside the image arrays' table, checksum and bytes per
sample. A store converted before stores kept georeference has no such section:
:meth:`PackedDataset.georeference` then says to convert it again.

S1 names: each patch's S1 name as its reader pairs it (BigEarthNet: the S1 patch folder;
SEN12MS: the S1 file stem), kept the same way in ``index["s1_names"]`` (:attr:`PackedDataset.s1_names`;
None for a store converted before stores kept them). The sections outside the main table are
:data:`SIDE_SECTIONS`; :func:`side_arrays` lists their arrays, which opening and verifying check like
the others.

Samples keep their raw form, so :class:`PackedDataset` applies the same
:class:`~fusmae_fast.data.transforms.ItemTransform` as the readers: a packed dataset and a direct read
give identical items (exactly for float32 S1; float16 S1 rounds dB to ~0.01). Arrays are opened with
``np.load(mmap_mode="r")`` lazily in each process (never pickled), so DataLoader workers share the
page cache and copy only the sample they read.

Integrity: opening a store checks every array file against the index (:func:`check_files`: present,
``.npy`` header with the recorded dtype and shape, the recorded size in bytes; cheap, always), so a
truncated or replaced file is named at once. Reading every byte against the recorded sha256
(:func:`verify_arrays`) is ``fusmae-fast verify STORE`` (:mod:`fusmae_fast.data.verify`) or
``PackedDataset(..., verify=True)``. Stores written before sizes were recorded are checked against
the size their ``.npy`` header implies; arrays without a recorded sha256 are reported as unverifiable.
"""

from __future__ import annotations

import hashlib
import json
import os
import tokenize
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from fusmae_fast.data.errors import DatasetError, MissingDataError, NoGeoreferenceError
from fusmae_fast.data.raw_dataset import RawDataset
from fusmae_fast.data.raw_sample import DatasetInfo, Georeference, RawSample, S2Layout
from fusmae_fast.data.splits import canonical_split
from fusmae_fast.data.transforms import Fit, ItemTransform

GEOREFERENCE_ARRAYS = ("geo_epsg", "geo_bounds")
"""The arrays of ``index["georeference"]["arrays"]``."""
S1_NAME_ARRAYS = ("s1_names",)
"""The arrays of ``index["s1_names"]["arrays"]``."""
SIDE_SECTIONS: dict[str, tuple[str, ...]] = {"georeference": GEOREFERENCE_ARRAYS, "s1_names": S1_NAME_ARRAYS}
"""Index sections whose arrays are kept outside the main ``arrays`` table, so its checksum and the
bytes per sample stay those of the images, names, labels and splits; a store written before a
section was added lacks it."""
STORE_FORMAT = "fusmae-fast-store"
STORE_VERSION = 1
INDEX_NAME = "index.json"
S1_DTYPES: tuple[str, ...] = ("float32", "float16")


def is_store(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder with a store index."""
    index = Path(path) / INDEX_NAME
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("format") == STORE_FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def read_index(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON index of a complete store; errors name the folder."""
    root = Path(path)
    index_path = root / INDEX_NAME
    if not index_path.is_file():
        partial = (
            " (a convert into it did not finish: run it again to resume)"
            if (root / ".convert").is_dir()
            else ""
        )
        raise MissingDataError(f"{root}: not a packed store, {INDEX_NAME} missing{partial}")
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{index_path}: unreadable store index ({e})") from e
    if index.get("format") != STORE_FORMAT:
        raise DatasetError(f"{index_path}: not a {STORE_FORMAT} index")
    if index.get("version") != STORE_VERSION:
        raise DatasetError(
            f"{index_path}: store version {index.get('version')}, this code reads {STORE_VERSION}"
        )
    return index


def chunk_digest(block: np.ndarray) -> str:
    """sha256 of an array block's bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(block).tobytes()).hexdigest()


def array_digest(arr: np.ndarray, chunk_size: int, workers: int = 1) -> str:
    """sha256 over the per-chunk sha256 digests of ``arr``'s rows (the store's checksum scheme);
    ``workers`` threads hash chunks side by side (hashlib releases the GIL)."""
    starts = range(0, len(arr), chunk_size)

    def digest(start: int) -> bytes:
        return bytes.fromhex(chunk_digest(arr[start : start + chunk_size]))

    h = hashlib.sha256()
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for d in pool.map(digest, starts):
                h.update(d)
    else:
        for start in starts:
            h.update(digest(start))
    return h.hexdigest()


NPY_HEADER_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    UnicodeDecodeError,
    tokenize.TokenError,
)
"""What numpy raises on a ``.npy`` file whose header is damaged: ValueError or SyntaxError from the
literal's parse, and from Python 3.12 on ``tokenize.TokenError`` (not a SyntaxError) from the
tokenizer that reads the header first."""


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran order, header length) of a ``.npy`` file, without reading its data."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif major == 2:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {major} is not one a store writes")
        return shape, dtype, fortran, f.tell()


def file_problem(path: Path, spec: dict[str, Any]) -> str | None:
    """What is wrong with the array file ``path`` against its index entry ``spec`` (None: nothing),
    from its size and header only."""
    if not path.is_file():
        return "missing"
    try:
        shape, dtype, fortran, header = _npy_header(path)
    except NPY_HEADER_ERRORS as e:
        return f"unreadable .npy header ({e})"
    want_dtype = np.dtype(spec["dtype"])
    if list(shape) != list(spec["shape"]) or dtype.str != want_dtype.str or fortran:
        return f"holds {dtype.str}{tuple(shape)}, the index records {want_dtype.str}{tuple(spec['shape'])}"
    size = path.stat().st_size
    if "bytes" in spec:
        expected, source = int(spec["bytes"]), "the index records"
    else:  # a store written before sizes were recorded
        expected, source = header + int(np.prod(shape)) * dtype.itemsize, "its header implies"
    if size != expected:
        return f"{size} bytes, {source} {expected} (truncated or overwritten)"
    return None


def section_arrays(index: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    """The entries of the arrays of one of :data:`SIDE_SECTIONS` (empty for a store without it)."""
    return index.get(section, {}).get("arrays", {})


def georeference_arrays(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The georeference arrays' entries of a store index (empty for a store without georeference)."""
    return section_arrays(index, "georeference")


def side_arrays(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The entries of every array kept outside the main table (those of :data:`SIDE_SECTIONS`)."""
    return {name: spec for section in SIDE_SECTIONS for name, spec in section_arrays(index, section).items()}


def all_arrays(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The main table's entries and the side sections' (:func:`side_arrays`)."""
    return {**index["arrays"], **side_arrays(index)}


def check_files(root: Path, index: dict[str, Any]) -> None:
    """Every array file of the store ``root`` (side sections' arrays included) as its index records it
    (see :func:`file_problem`); the error names the first bad file."""
    for name, spec in all_arrays(index).items():
        path = root / spec["file"]
        problem = file_problem(path, spec)
        if problem == "missing":
            raise MissingDataError(f"{path}: store array {name!r} missing")
        if problem is not None:
            raise DatasetError(
                f"{path}: store array {name!r} {problem}; `fusmae-fast verify {root}` checks all"
            )


def verify_arrays(
    root: Path, index: dict[str, Any], workers: int = 1
) -> tuple[dict[str, str | None], list[str]]:
    """Check every array file of the store ``root`` (the side sections' too, when present): size and
    header, then every byte against the recorded sha256. Returns ({file: problem or None}, files
    without a recorded sha256)."""
    results: dict[str, str | None] = {}
    unchecked: list[str] = []
    for spec in all_arrays(index).values():
        path = root / spec["file"]
        problem = file_problem(path, spec)
        if problem is None and "sha256" not in spec:
            unchecked.append(spec["file"])
        elif problem is None:
            arr = np.load(path, mmap_mode="r")
            if array_digest(arr, int(index["chunk_size"]), workers) != spec["sha256"]:
                problem = "checksum mismatch (store corrupted: its bytes changed since the convert)"
        results[spec["file"]] = problem
    digests = [index["arrays"][k].get("sha256") for k in sorted(index["arrays"])]
    if "checksum" in index and None not in digests:
        total = hashlib.sha256("".join(digests).encode()).hexdigest()  # type: ignore[arg-type]
        if total != index["checksum"]:
            results[INDEX_NAME] = "its total checksum does not match its array checksums (index altered)"
    return results, unchecked


class PackedDataset(RawDataset):
    """One split of a packed store, serving the same items as the reader it was converted from.

    Args:
        root: the store folder.
        split: 'train' | 'validation' ('val') | 'test' | 'all' (every sample of the store).
        image_size: output side (default: the native size, 120 for both kinds after fitting).
        normalize: docs/design.md §5 normalisation; False returns raw values.
        fit: 'resize' or 'crop' (default: 'resize' for BigEarthNet, 'crop' for SEN12MS).
        verify: recompute every array's sha256 against the index first (reads the whole store).

    Opening checks each array file's header and size against the index (:func:`check_files`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        image_size: int = 120,
        normalize: bool = True,
        fit: Fit | None = None,
        verify: bool = False,
    ) -> None:
        self.root = Path(root)
        self.index = read_index(self.root)
        self.split = canonical_split(split)
        self.layout = S2Layout.from_json(self.index["layout"])
        kind = self.index["kind"]
        self.transform = ItemTransform(
            image_size=image_size,
            normalize=normalize,
            fit=fit if fit is not None else ("crop" if kind == "sen12ms" else "resize"),
        )
        self.info = DatasetInfo(
            kind=kind,
            source=self.index["source"],
            skipped=self.index.get("skipped", {}),
            skipped_patches=self.index.get("skipped_patches", []),
        )
        self.split_origin = str(self.root / INDEX_NAME)
        self.modalities = ("s1", "s2")
        check_files(self.root, self.index)
        if verify:
            self.verify()
        split_names = list(self.index["split_names"])
        codes = np.load(self.root / self.index["arrays"]["split"]["file"], mmap_mode="r")
        if self.split == "all":
            self.indices = np.arange(len(codes), dtype=np.int64)
        else:
            if self.split not in split_names:
                raise ValueError(f"{self.root}: the store holds split(s) {split_names}, not {self.split!r}")
            self.indices = np.flatnonzero(np.asarray(codes) == split_names.index(self.split)).astype(np.int64)
        labels = np.load(self.root / self.index["arrays"]["labels"]["file"], mmap_mode="r")
        picked = np.asarray(labels[self.indices])
        self.labels = picked.astype(np.int64) if kind == "sen12ms" else picked.astype(np.float32)
        self._arrays: dict[str, np.ndarray] | None = None
        self._names: list[str] | None = None
        self._s1_names: list[str] | None = None

    # Arrays are mapped on first use in each process and never pickled.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        state["_names"] = None
        state["_s1_names"] = None
        return state

    def _mapped(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {
                name: np.load(self.root / spec["file"], mmap_mode="r")
                for name, spec in all_arrays(self.index).items()
            }
        return self._arrays

    @property
    def names(self) -> list[str]:  # type: ignore[override]
        if self._names is None:
            raw = self._mapped()["names"]
            self._names = [raw[j].decode("ascii") for j in self.indices]
        return self._names

    @property
    def s1_names(self) -> list[str] | None:
        """Each sample's S1 name as the convert recorded it; None for a store converted before stores
        kept S1 names."""
        if not section_arrays(self.index, "s1_names"):
            return None
        if self._s1_names is None:
            raw = self._mapped()["s1_names"]
            self._s1_names = [raw[j].decode("ascii") for j in self.indices]
        return self._s1_names

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def bytes_per_sample(self) -> float:
        return float(self.index["bytes_per_sample"])

    def read_raw(self, index: int) -> RawSample:
        j = int(self.indices[index])
        arrays = self._mapped()
        groups = tuple(arrays[f"s2_g{g}"][j] for g in range(len(self.layout.groups)))
        return RawSample(
            s1=arrays["s1"][j], s2=groups, label=self.labels[index], name=arrays["names"][j].decode("ascii")
        )

    def georeference(self, index: int) -> Georeference:
        """The CRS and bounds recorded for sample ``index`` by the convert."""
        if not georeference_arrays(self.index):
            raise NoGeoreferenceError(
                f"{self.root}: the store keeps no georeference (converted before stores kept it); convert "
                "it again (fusmae-fast convert --overwrite), or pass --no-geometry"
            )
        j = int(self.indices[index])
        arrays = self._mapped()
        left, bottom, right, top = (float(v) for v in arrays["geo_bounds"][j])
        return Georeference(epsg=int(arrays["geo_epsg"][j]), bounds=(left, bottom, right, top))

    def verify(self) -> None:
        """Recompute each array file's content hash (side sections' arrays included) and compare with the
        index (DatasetError if not)."""
        results, unchecked = verify_arrays(self.root, self.index)
        for file, problem in results.items():
            if problem is not None:
                raise DatasetError(f"{self.root / file}: {problem}")
        if unchecked:
            raise DatasetError(
                f"{self.root / INDEX_NAME}: records no checksum for {', '.join(unchecked)} (written by an "
                "older convert): the contents cannot be verified; convert again to add checksums"
            )
