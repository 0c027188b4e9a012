"""Pack readers' samples into a store (see :mod:`fusmae_fast.data.store`): parallel, resumable, verified.

How a convert runs:

1. The sources (one reader per split) are indexed and every patch must appear once across them
   (:func:`~fusmae_fast.data.bad_patches.check_unique_patches`: a patch in two splits or listed
   twice stops the convert, or with ``skip_bad`` is left out and recorded in the index's
   ``skipped_patches``); names, labels and split codes are written at once, and so are the S1 names
   (:func:`source_s1_names`), kept in their own index section (``index["s1_names"]``).
   A fingerprint of everything that determines the store's bytes (kind, layout, S1 dtype, chunk size,
   names, S1 names, labels, splits, source description) goes to ``OUT/.convert/plan.json``.
2. The image arrays and the georeference arrays (each patch's EPSG code and bounds, from its reader's
   ``georeference``) are preallocated as ``.npy`` memmaps. Samples are processed in chunks of
   ``chunk_size`` rows by worker processes, each writing its rows straight into the memmaps, flushing,
   and returning the chunk's per-array sha256 and per-band sums. The parent then records the chunk in
   ``OUT/.convert/chunks/<k>.json`` (atomic rename). Chunks are independent and idempotent.
3. Killed at any point, the next run with the same arguments finds the same fingerprint, skips the
   recorded chunks and redoes the others: every byte of the result depends only on the sources, so
   the store is identical to an uninterrupted one. Different arguments -> an error (or ``overwrite``).
4. Verification: every chunk is re-hashed from disk and compared with its record, and
   ``verify_samples`` random samples are read again from the source and compared with the store.
   Statistics (per-band mean/std of the raw values, label counts per split) are combined from the chunk
   sums in chunk order. ``index.json`` is written last (atomic), ``.convert`` removed: a folder with an
   ``index.json`` is a complete, verified store.

Array checksum: sha256 over the concatenated sha256 digests of its row chunks (so chunks hash in
parallel and a resumed convert reuses the recorded digests). The index also records each array
file's size in bytes, which opening a store checks (:func:`~fusmae_fast.data.store.check_files`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusmae_fast.atomic_write import atomic_write_text
from fusmae_fast.data.bad_patches import check_unique_patches
from fusmae_fast.data.bands import S1_BANDS, S2_BANDS
from fusmae_fast.data.errors import DatasetError
from fusmae_fast.data.labels import BEN19_NAMES, SIMPLIFIED_IGBP_NAMES
from fusmae_fast.data.raw_dataset import RawDataset
from fusmae_fast.data.raw_sample import RawSample, S2Layout
from fusmae_fast.data.store import (
    GEOREFERENCE_ARRAYS,
    INDEX_NAME,
    NPY_HEADER_ERRORS,
    S1_DTYPES,
    S1_NAME_ARRAYS,
    STORE_FORMAT,
    STORE_VERSION,
    array_digest,
    chunk_digest,
    is_store,
)

STATE_DIR = ".convert"
ProgressCallback = Callable[[int, int], None]


@dataclass
class _Plan:
    out: Path
    sources: list[tuple[str, RawDataset]]
    offsets: list[int]
    layout: S2Layout
    s1_dtype: str
    chunk_size: int
    num_samples: int
    parent_pid: int

    @property
    def num_chunks(self) -> int:
        return (self.num_samples + self.chunk_size - 1) // self.chunk_size

    def locate(self, row: int) -> tuple[RawDataset, int]:
        k = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return self.sources[k][1], row - self.offsets[k]

    def image_arrays(self) -> dict[str, tuple[tuple[int, ...], str]]:
        n, full = self.num_samples, self.layout.full_size
        out = {
            f"s2_g{g}": ((n, len(names), size, size), "uint16")
            for g, (names, size) in enumerate(self.layout.groups)
        }
        out["s1"] = ((n, len(S1_BANDS), full, full), self.s1_dtype)
        return out

    def geo_arrays(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Each patch's georeference (``store.GEOREFERENCE_ARRAYS``): EPSG code and bounds."""
        return {"geo_epsg": ((self.num_samples,), "int32"), "geo_bounds": ((self.num_samples, 4), "float64")}

    def chunk_arrays(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """The arrays that chunks write row by row: the images and the georeference."""
        return {**self.image_arrays(), **self.geo_arrays()}


_PLAN: _Plan | None = None
_MAPS: dict[str, np.ndarray] = {}


def _init_worker(plan: _Plan | None) -> None:
    global _PLAN
    _PLAN = plan
    _MAPS.clear()


def _worker_maps(plan: _Plan) -> dict[str, np.ndarray]:
    if not _MAPS:
        for name in plan.chunk_arrays():
            _MAPS[name] = np.load(plan.out / f"{name}.npy", mmap_mode="r+")
    return _MAPS


def _check_raw(raw: RawSample, plan: _Plan, source: RawDataset, local: int) -> None:
    where = f"{type(source).__name__} sample {local} ({raw.name})"
    if raw.s1 is None or raw.s2 is None:
        raise DatasetError(f"{where}: the store needs both S1 and S2 (read with bands='all')")
    full = plan.layout.full_size
    if raw.s1.shape != (len(S1_BANDS), full, full):
        raise DatasetError(f"{where}: S1 shape {raw.s1.shape}, expected {(len(S1_BANDS), full, full)}")
    for arr, (names, size) in zip(raw.s2, plan.layout.groups, strict=True):
        if arr.shape != (len(names), size, size) or arr.dtype != np.uint16:
            raise DatasetError(f"{where}: S2 group {names} is {arr.dtype}{arr.shape}, expected uint16")


def _pack_chunk(k: int) -> dict[str, Any]:
    """Read, write and hash rows of chunk ``k``; runs in a worker (or in-process with workers=0)."""
    plan = _PLAN
    assert plan is not None
    maps = _worker_maps(plan)
    lo, hi = k * plan.chunk_size, min((k + 1) * plan.chunk_size, plan.num_samples)
    sums = {"s2": np.zeros((len(S2_BANDS), 3)), "s1": np.zeros((len(S1_BANDS), 3))}
    band_row = {b: i for i, b in enumerate(S2_BANDS)}
    for row in range(lo, hi):
        if os.getppid() != plan.parent_pid and plan.parent_pid != os.getpid():
            os._exit(3)  # the convert that started us is gone: stop writing
        source, local = plan.locate(row)
        try:
            raw = source.read_raw(local)
        except DatasetError as e:  # name the patch when the file's path does not
            name = source.names[local]
            if name in str(e):
                raise
            raise type(e)(f"{e} (patch {name})") from e
        _check_raw(raw, plan, source, local)
        assert raw.s2 is not None and raw.s1 is not None
        for g, arr in enumerate(raw.s2):
            maps[f"s2_g{g}"][row] = arr
            x = arr.astype(np.float64)
            for j, b in enumerate(plan.layout.groups[g][0]):
                sums["s2"][band_row[b]] += (x[j].sum(), (x[j] ** 2).sum(), x[j].size)
        s1 = raw.s1.astype(plan.s1_dtype)
        maps["s1"][row] = s1
        geo = source.georeference(local)
        maps["geo_epsg"][row] = geo.epsg
        maps["geo_bounds"][row] = geo.bounds
        x = s1.astype(np.float64)
        for j in range(len(S1_BANDS)):
            sums["s1"][j] += (x[j].sum(), (x[j] ** 2).sum(), x[j].size)
    digests = {}
    for name, arr in maps.items():
        arr.flush()
        digests[name] = chunk_digest(arr[lo:hi])
    return {"chunk": k, "rows": [lo, hi], "sha256": digests, "sums": {m: s.tolist() for m, s in sums.items()}}


def _rehash_chunk(k: int) -> tuple[int, dict[str, str]]:
    plan = _PLAN
    assert plan is not None
    lo, hi = k * plan.chunk_size, min((k + 1) * plan.chunk_size, plan.num_samples)
    out = {}
    for name in plan.chunk_arrays():
        arr = np.load(plan.out / f"{name}.npy", mmap_mode="r")
        out[name] = chunk_digest(arr[lo:hi])
    return k, out


def _fingerprint(plan: _Plan, meta: dict[str, np.ndarray], source_info: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    head = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "layout": plan.layout.to_json(),
        "s1_dtype": plan.s1_dtype,
        "chunk_size": plan.chunk_size,
        "num_samples": plan.num_samples,
        "sources": source_info,
        "georeference": list(GEOREFERENCE_ARRAYS),
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for name in sorted(meta):
        h.update(name.encode())
        h.update(np.ascontiguousarray(meta[name]).tobytes())
    return h.hexdigest()


def source_s1_names(ds: RawDataset) -> list[str] | None:
    """Each patch's S1 name, as ``ds`` pairs it: a reader's (or a store's) ``s1_names``, SEN12MS's S1
    file stem (its S2 name with ``_s2_`` -> ``_s1_``); None when ``ds`` does not know them."""
    names = getattr(ds, "s1_names", None)
    if names is None and ds.info.kind == "sen12ms":
        names = [n.replace("_s2_", "_s1_", 1) for n in ds.names]
    if names is None or any(n is None for n in names):
        return None
    return list(names)


def _ascii_array(names: list[str]) -> np.ndarray:
    """Names as a fixed-width ASCII array (the store's ``names.npy`` form)."""
    for n in names:
        if not n.isascii():
            raise DatasetError(f"patch name {n!r} is not ASCII")
    return np.array(names, dtype=f"S{max([len(n) for n in names] + [1])}")


def _s1_name_arrays(sources: Sequence[tuple[str, RawDataset]]) -> dict[str, np.ndarray]:
    """``{"s1_names": array}`` when every source knows its S1 names, else empty (no section)."""
    lists = [source_s1_names(ds) for _, ds in sources]
    if any(names is None for names in lists):
        return {}
    return {S1_NAME_ARRAYS[0]: _ascii_array([n for names in lists for n in names])}  # type: ignore[union-attr]


def _meta_arrays(
    sources: Sequence[tuple[str, RawDataset]], kind: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    split_names = list(dict.fromkeys(s for s, _ in sources))
    names = [n for _, ds in sources for n in ds.names]
    if kind == "sen12ms":
        labels = np.concatenate([np.asarray(ds.labels, dtype=np.int64).reshape(-1) for _, ds in sources])
    else:
        labels = np.concatenate([np.asarray(ds.labels).reshape(-1, 19) for _, ds in sources]).astype(np.uint8)
    split = np.concatenate([np.full(len(ds), split_names.index(s), dtype=np.uint8) for s, ds in sources])
    return {"labels": labels, "names": _ascii_array(names), "split": split}, split_names


def _image_arrays_intact(plan: _Plan) -> bool:
    for name, (shape, dtype) in plan.chunk_arrays().items():
        try:
            arr = np.load(plan.out / f"{name}.npy", mmap_mode="r")
        except NPY_HEADER_ERRORS:  # killed while the headers were written: start afresh
            return False
        if arr.shape != shape or arr.dtype != np.dtype(dtype):
            return False
    return True


def _remove_store_files(out: Path) -> None:
    """Delete what a convert writes (only those files: OUT may hold other things)."""
    for p in out.glob("*.npy"):
        if p.name.startswith(("s2_g", "s1", "labels", "names", "split", "geo_")):
            p.unlink()
    for p in (out / INDEX_NAME,):
        if p.exists():
            p.unlink()
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)


def _statistics(
    records: list[dict[str, Any]], meta: dict[str, np.ndarray], split_names: list[str], kind: str
) -> dict[str, Any]:
    tot = {m: np.zeros((len(b), 3)) for m, b in (("s2", S2_BANDS), ("s1", S1_BANDS))}
    for rec in records:  # chunk order: the same sums whatever order chunks ran in
        for m in tot:
            tot[m] += np.asarray(rec["sums"][m])
    stats: dict[str, Any] = {}
    for m, bands in (("s2", S2_BANDS), ("s1", S1_BANDS)):
        s, ss, c = tot[m][:, 0], tot[m][:, 1], np.maximum(tot[m][:, 2], 1)
        mean = s / c
        std = np.sqrt(np.maximum(ss / c - mean**2, 0.0))
        stats[m] = {b: {"mean": float(mean[i]), "std": float(std[i])} for i, b in enumerate(bands)}
    counts = {}
    for code, split in enumerate(split_names):
        sel = meta["split"] == code
        if kind == "sen12ms":
            counts[split] = np.bincount(meta["labels"][sel], minlength=len(SIMPLIFIED_IGBP_NAMES)).tolist()
        else:
            counts[split] = meta["labels"][sel].astype(np.int64).sum(0).tolist()
    stats["label_counts"] = counts
    return stats


def pack(
    sources: Sequence[tuple[str, RawDataset]],
    out: str | os.PathLike[str],
    *,
    s1_dtype: str = "float32",
    chunk_size: int = 64,
    workers: int = 2,
    overwrite: bool = False,
    verify_samples: int = 16,
    progress: bool = True,
    on_chunk: ProgressCallback | None = None,
    description: dict[str, Any] | None = None,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Pack ``sources`` ((split name, reader) pairs, concatenated in order) into the store ``out``.

    Returns the index. ``workers`` = 0 runs in this process. ``on_chunk(done, total)`` is called after
    each recorded chunk (an exception from it stops the convert, which can then be resumed).
    ``description`` is stored as ``index["source"]["convert"]`` (e.g. the command line's options).
    ``skip_bad``: a patch in two splits or twice in one is left out (recorded in the index) instead
    of stopping the convert; give the readers ``skip_bad=True`` too for what they check.
    """
    if s1_dtype not in S1_DTYPES:
        raise ValueError(f"s1_dtype must be one of {S1_DTYPES}, got {s1_dtype!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not sources:
        raise ValueError("nothing to pack: no sources")
    sources = check_unique_patches(sources, skip_bad)
    kinds = {ds.info.kind for _, ds in sources}
    layouts = {ds.layout for _, ds in sources}
    if len(kinds) != 1 or len(layouts) != 1:
        raise ValueError(f"sources mix kinds {kinds} or S2 layouts")
    kind = kinds.pop()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta, split_names = _meta_arrays(sources, kind)
    s1_meta = _s1_name_arrays(sources)
    offsets = np.cumsum([0] + [len(ds) for _, ds in sources]).tolist()
    plan = _Plan(
        out=out,
        sources=list(sources),
        offsets=offsets[:-1],
        layout=layouts.pop(),
        s1_dtype=s1_dtype,
        chunk_size=chunk_size,
        num_samples=int(offsets[-1]),
        parent_pid=os.getpid(),
    )
    if plan.num_samples == 0:
        raise ValueError("nothing to pack: the sources hold no samples")
    source_info = [{"split": s, **ds.info.source, "skipped": ds.info.skipped} for s, ds in sources]
    fingerprint = _fingerprint(plan, {**meta, **s1_meta}, source_info)

    state = out / STATE_DIR
    if (out / INDEX_NAME).exists():
        if is_store(out) and json.loads((out / INDEX_NAME).read_text()).get("fingerprint") == fingerprint:
            if not overwrite:
                return json.loads((out / INDEX_NAME).read_text())
        elif not overwrite:
            raise FileExistsError(
                f"{out}: holds a different store; pass overwrite=True (--overwrite) to replace it"
            )
        _remove_store_files(out)
    if (state / "plan.json").exists():
        previous = json.loads((state / "plan.json").read_text()).get("fingerprint")
        if previous != fingerprint:
            if not overwrite:
                raise FileExistsError(
                    f"{out}: holds an unfinished convert of other data or options; run that command again to "
                    "resume it, or pass overwrite=True (--overwrite) to start afresh"
                )
            _remove_store_files(out)
    fresh = not (state / "plan.json").exists()
    if not fresh and not _image_arrays_intact(plan):
        fresh = True  # killed while preallocating: nothing recorded can be trusted
    if fresh:
        shutil.rmtree(state, ignore_errors=True)
        for name, (shape, dtype) in plan.chunk_arrays().items():
            np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=dtype, shape=shape).flush()
        (state / "chunks").mkdir(parents=True)
        atomic_write_text(
            state / "plan.json", json.dumps({"fingerprint": fingerprint, "num_chunks": plan.num_chunks})
        )
    for name, arr in {**meta, **s1_meta}.items():
        np.save(out / f"{name}.npy", arr)

    def record_path(k: int) -> Path:
        return state / "chunks" / f"{k:07d}.json"

    pending = [k for k in range(plan.num_chunks) if not record_path(k).exists()]
    from tqdm import tqdm

    bar = tqdm(
        total=plan.num_samples,
        initial=plan.num_samples - sum(min(chunk_size, plan.num_samples - k * chunk_size) for k in pending),
        desc=f"convert -> {out.name}",
        unit="sample",
        disable=not progress,
    )
    done = plan.num_chunks - len(pending)

    def save(rec: dict[str, Any]) -> None:
        nonlocal done
        atomic_write_text(record_path(rec["chunk"]), json.dumps(rec))
        done += 1
        bar.update(rec["rows"][1] - rec["rows"][0])
        if on_chunk is not None:
            on_chunk(done, plan.num_chunks)

    try:
        _run(plan, pending, workers, _pack_chunk, save)
        records = [json.loads(record_path(k).read_text()) for k in range(plan.num_chunks)]
        _verify(plan, records, workers, verify_samples)
    finally:
        bar.close()
        _init_worker(None)  # drop this process's maps and plan (in-process runs)

    def chunked_spec(name: str, shape: tuple[int, ...], dtype: str) -> dict[str, Any]:
        h = hashlib.sha256()
        for rec in records:
            h.update(bytes.fromhex(rec["sha256"][name]))
        return {"file": f"{name}.npy", "dtype": dtype, "shape": list(shape), "sha256": h.hexdigest()}

    arrays = {name: chunked_spec(name, *spec) for name, spec in plan.image_arrays().items()}
    geo = {name: chunked_spec(name, *spec) for name, spec in plan.geo_arrays().items()}

    def whole_spec(name: str, arr: np.ndarray) -> dict[str, Any]:
        return {
            "file": f"{name}.npy",
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
            "sha256": array_digest(arr, chunk_size),
        }

    arrays.update({name: whole_spec(name, arr) for name, arr in meta.items()})
    s1_names = {name: whole_spec(name, arr) for name, arr in s1_meta.items()}
    for spec in [*arrays.values(), *geo.values(), *s1_names.values()]:
        spec["bytes"] = (out / spec["file"]).stat().st_size
    total = hashlib.sha256("".join(arrays[k]["sha256"] for k in sorted(arrays)).encode()).hexdigest()
    data_bytes = sum(int(np.prod(a["shape"])) * np.dtype(a["dtype"]).itemsize for a in arrays.values())
    file_bytes = sum(a["bytes"] for a in arrays.values())
    index = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "kind": kind,
        "num_samples": plan.num_samples,
        "split_names": split_names,
        "splits": {s: int((meta["split"] == i).sum()) for i, s in enumerate(split_names)},
        "layout": plan.layout.to_json(),
        "s2_bands": list(S2_BANDS),
        "s1_bands": list(S1_BANDS),
        "s1_dtype": s1_dtype,
        "labels": {
            "kind": "class-id" if kind == "sen12ms" else "multi-hot",
            "num_classes": len(SIMPLIFIED_IGBP_NAMES) if kind == "sen12ms" else len(BEN19_NAMES),
            "class_names": list(SIMPLIFIED_IGBP_NAMES if kind == "sen12ms" else BEN19_NAMES),
        },
        "arrays": arrays,
        "georeference": {
            "reference": "each patch's reference GeoTIFF (BigEarthNet: S2 band B02; SEN12MS: the S2 file)",
            "arrays": geo,
        },
        **(
            {"s1_names": {"reference": "each patch's S1 name as its reader pairs it", "arrays": s1_names}}
            if s1_names
            else {}
        ),
        "statistics": _statistics(records, meta, split_names, kind),
        "source": {"sources": source_info, "convert": description or {}},
        "skipped": _sum_skipped(sources),
        "skipped_patches": [{"split": s, **rec} for s, ds in sources for rec in ds.info.skipped_patches],
        "chunk_size": chunk_size,
        "bytes_per_sample": data_bytes / plan.num_samples,
        "file_bytes": file_bytes,
        "checksum": total,
        "fingerprint": fingerprint,
    }
    atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=1))
    shutil.rmtree(state, ignore_errors=True)
    return index


def _sum_skipped(sources: Sequence[tuple[str, RawDataset]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, ds in sources:
        for reason, n in ds.info.skipped.items():
            out[reason] = out.get(reason, 0) + int(n)
    return out


def _run(
    plan: _Plan,
    chunks: list[int],
    workers: int,
    fn: Callable[[int], Any],
    consume: Callable[[Any], None],
) -> None:
    """fn(k) for every chunk, in ``workers`` processes (0: here), results to ``consume`` as they come."""
    if not chunks:
        return
    if workers <= 0 or len(chunks) == 1:
        _init_worker(plan)
        for k in chunks:
            consume(fn(k))
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(min(workers, len(chunks)), initializer=_init_worker, initargs=(plan,)) as pool:
        for result in pool.imap_unordered(fn, chunks):
            consume(result)


def _verify(plan: _Plan, records: list[dict[str, Any]], workers: int, verify_samples: int) -> None:
    """Re-hash every chunk from disk against its record; re-read sample rows from the source."""
    found: dict[int, dict[str, str]] = {}
    _run(plan, list(range(plan.num_chunks)), workers, _rehash_chunk, lambda r: found.__setitem__(r[0], r[1]))
    for rec in records:
        for name, digest in rec["sha256"].items():
            if found[rec["chunk"]][name] != digest:
                lo, hi = rec["rows"]
                raise DatasetError(
                    f"{plan.out / (name + '.npy')}: rows {lo}..{hi - 1} changed on disk after writing"
                )
    if verify_samples <= 0:
        return
    rng = np.random.default_rng(plan.num_samples)
    rows = sorted(set(rng.integers(0, plan.num_samples, size=verify_samples).tolist()))
    maps = {name: np.load(plan.out / f"{name}.npy", mmap_mode="r") for name in plan.image_arrays()}
    geo_maps = {name: np.load(plan.out / f"{name}.npy", mmap_mode="r") for name in plan.geo_arrays()}
    names = np.load(plan.out / "names.npy", mmap_mode="r")
    for row in rows:
        source, local = plan.locate(row)
        raw = source.read_raw(local)
        assert raw.s1 is not None and raw.s2 is not None
        same = names[row].decode("ascii") == raw.name and np.array_equal(
            maps["s1"][row], raw.s1.astype(plan.s1_dtype)
        )
        same = same and all(np.array_equal(maps[f"s2_g{g}"][row], a) for g, a in enumerate(raw.s2))
        geo = source.georeference(local)
        same = same and int(geo_maps["geo_epsg"][row]) == geo.epsg
        same = same and tuple(float(v) for v in geo_maps["geo_bounds"][row]) == geo.bounds
        if not same:
            raise DatasetError(f"{plan.out}: row {row} ({raw.name}) differs from its source after packing")
