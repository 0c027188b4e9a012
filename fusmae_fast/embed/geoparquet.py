"""The output: a GeoParquet 1.1 file written in row groups, resumable after a kill.

Columns: ``name`` (S2 patch name), ``s1_name`` (null where the source does not say), ``split``,
``labels`` (BigEarthNet-19 class indices, or the one SEN12MS class), ``embedding`` (fixed-size list,
float32 or float16), ``geometry`` (WKB polygon, lon/lat) and ``bbox`` (struct xmin, ymin, xmax, ymax:
GeoParquet 1.1's bounding-box covering). File metadata: ``geo`` (the GeoParquet metadata: version
1.1.0, primary column, encoding WKB, geometry types, orientation, bbox, covering; no ``crs`` key means
OGC:CRS84) and ``fusmae_fast`` (what made the embeddings: see ``fusmae_fast.embed.driver``). Without
geometry there is neither ``geometry``, ``bbox`` nor ``geo``: a plain Parquet file.

Resume. Until it is complete, the file is a folder ``<out>.partial/`` beside it: ``run.json`` (the
fingerprint of the command: checkpoint hash, data, rows, settings), one Parquet file per finished
row group, ``group-<k>.parquet``, and ``form_picks.json`` (the forms the torch path picked by timing,
``fusmae_fast.form_timing``), each written atomically (``fusmae_fast.atomic_write``). A kill loses
at most the row groups under way; the same command finds the folder, checks its fingerprint, skips
the finished groups and computes the rest with the forms the killed run picked (the forms round
differently: timed afresh, a busy machine could pick others, and the file would mix them). When
every group is there they are copied, in order, one row group each, into
``<out>.partial/assembled.parquet`` with the file metadata, which is fsync'ed and renamed to
``<out>``; then the folder is removed.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fusmae_fast.atomic_write import atomic_write_bytes, atomic_write_text
from fusmae_fast.embed.footprint import polygon_wkb, ring_bbox

GEOPARQUET_VERSION = "1.1.0"
RUN_NAME = "run.json"
PICKS_NAME = "form_picks.json"
GROUP_RE = re.compile(r"^group-(\d{6})\.parquet$")
BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


class OutputError(ValueError):
    """An output file or unfinished run that this command may not use as it is (one line)."""


def output_schema(width: int, dtype: str, geometry: bool) -> pa.Schema:
    """The columns of the file (see the module docstring); ``width`` = the encoder's embed_dim."""
    fields = [
        pa.field("name", pa.string(), nullable=False),
        pa.field("s1_name", pa.string()),
        pa.field("split", pa.string(), nullable=False),
        pa.field("labels", pa.list_(pa.int16()), nullable=False),
        pa.field("embedding", pa.list_(pa.float16() if dtype == "float16" else pa.float32(), width)),
    ]
    if geometry:
        bbox = pa.struct([pa.field(f, pa.float64()) for f in BBOX_FIELDS])
        fields += [pa.field("geometry", pa.binary()), pa.field("bbox", bbox)]
    return pa.schema(fields)


def rows_table(
    schema: pa.Schema,
    rows: dict[str, list[Any]],
    embeddings: np.ndarray,
    rings: np.ndarray | None,
) -> pa.Table:
    """One row group: ``rows`` holds the name, s1_name, split and labels lists, ``embeddings`` (n, width)
    and ``rings`` (n, points, 2) lon/lat footprints (None without geometry)."""
    width = embeddings.shape[1]
    value_type = schema.field("embedding").type.value_type
    flat = pa.array(np.ascontiguousarray(embeddings).reshape(-1), type=value_type)
    columns: dict[str, pa.Array] = {
        "name": pa.array(rows["name"], pa.string()),
        "s1_name": pa.array(rows["s1_name"], pa.string()),
        "split": pa.array(rows["split"], pa.string()),
        "labels": pa.array(rows["labels"], pa.list_(pa.int16())),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, width),
    }
    if rings is not None:
        box = ring_bbox(rings)
        columns["geometry"] = pa.array([polygon_wkb(r) for r in rings], pa.binary())
        columns["bbox"] = pa.StructArray.from_arrays(
            [pa.array(box[:, i], pa.float64()) for i in range(4)], names=list(BBOX_FIELDS)
        )
    return pa.Table.from_pydict(columns, schema=schema)


def geo_metadata(bbox: list[float] | None) -> dict[str, Any]:
    """GeoParquet 1.1 file metadata of the ``geometry`` column (lon/lat polygons, bbox covering);
    ``bbox``: xmin, ymin, xmax, ymax of every row (None for an empty file)."""
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": ["Polygon"],
        "orientation": "counterclockwise",
        "edges": "planar",
        "covering": {"bbox": {f: ["bbox", f] for f in BBOX_FIELDS}},
    }
    if bbox is not None:
        column["bbox"] = [float(v) for v in bbox]
    return {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}


def partial_folder(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def describe_existing(out: Path) -> str:
    """Why an existing ``out`` is refused: a readable Parquet file, or a corrupt one."""
    try:
        meta = pq.read_metadata(out)
    except Exception:  # pyarrow raises several types for a damaged file
        return (
            f"{out}: exists and is not a readable Parquet file (truncated or corrupt); "
            "--overwrite replaces it"
        )
    return f"{out}: exists ({meta.num_rows} rows); --overwrite replaces it"


class PartialOutput:
    """The ``<out>.partial/`` folder of an unfinished run (see the module docstring)."""

    def __init__(self, out: Path, fingerprint: dict[str, Any], num_groups: int) -> None:
        self.out = out
        self.folder = partial_folder(out)
        self.fingerprint = fingerprint
        self.num_groups = num_groups

    @classmethod
    def open(
        cls, out: str | os.PathLike[str], fingerprint: dict[str, Any], num_groups: int, overwrite: bool
    ) -> PartialOutput:
        """Start a run into ``out``, or continue the unfinished run of the same command.

        Refuses (:class:`OutputError`) an existing ``out`` and an unfinished run of another command
        unless ``overwrite`` (which removes both).
        """
        self = cls(Path(out), fingerprint, num_groups)
        if overwrite:
            if self.out.is_dir():
                raise OutputError(f"{self.out}: is a folder, not an output file")
            self.out.unlink(missing_ok=True)
            shutil.rmtree(self.folder, ignore_errors=True)
        elif self.out.exists():
            if self._recorded() == fingerprint:  # killed after the rename, before the folder's removal
                shutil.rmtree(self.folder, ignore_errors=True)
            raise OutputError(describe_existing(self.out))
        run_file = self.folder / RUN_NAME
        if self.folder.is_dir() and run_file.is_file():
            try:
                before = json.loads(run_file.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise OutputError(
                    f"{run_file}: unreadable record of an unfinished run ({exc}); --overwrite starts over"
                ) from exc
            if before != fingerprint:
                differ = sorted(
                    k for k in set(before) | set(fingerprint) if before.get(k) != fingerprint.get(k)
                )
                raise OutputError(
                    f"{self.folder}: an unfinished run of another command (differs in {', '.join(differ)}); "
                    "rerun that command to finish it, or --overwrite to start over"
                )
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_file, json.dumps(fingerprint, indent=1, sort_keys=True))
        return self

    def _recorded(self) -> dict[str, Any] | None:
        """The fingerprint an unfinished run recorded in the folder (None if none is readable)."""
        try:
            return json.loads((self.folder / RUN_NAME).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def group_path(self, group: int) -> Path:
        return self.folder / f"group-{group:06d}.parquet"

    def finished_groups(self) -> list[int]:
        """The row groups already written (each checked readable with the expected schema)."""
        done = []
        for name in sorted(os.listdir(self.folder)):
            m = GROUP_RE.match(name)
            if m is None or int(m.group(1)) >= self.num_groups:
                continue
            try:
                pq.read_metadata(self.folder / name)
            except Exception as exc:  # pyarrow raises several types for a damaged file
                raise OutputError(
                    f"{self.folder / name}: unreadable row group of an unfinished run ({exc}); "
                    "--overwrite starts over"
                ) from exc
            done.append(int(m.group(1)))
        return done

    def write_group(self, group: int, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        atomic_write_bytes(self.group_path(group), buf.getvalue())

    def record_picks(self, picks: list[list[str]]) -> None:
        """Keep the forms picked so far (``form_timing.export_picks()``) for a resumed run."""
        atomic_write_text(self.folder / PICKS_NAME, json.dumps(picks, indent=1))

    def recorded_picks(self) -> list[list[str]]:
        """The forms an unfinished run picked ([] if it recorded none); an unreadable record is refused."""
        path = self.folder / PICKS_NAME
        if not path.is_file():
            return []
        try:
            picks = json.loads(path.read_text())
            return [[str(key), str(name)] for key, name in picks]
        except (OSError, ValueError, TypeError) as exc:
            raise OutputError(
                f"{path}: unreadable record of an unfinished run ({exc}); --overwrite starts over"
            ) from exc

    def assemble(self, schema: pa.Schema, metadata: dict[str, Any]) -> Path:
        """Copy the row groups in order, one at a time, into the final file (with ``metadata`` and, with
        geometry, the ``geo`` entry), rename it to ``out`` and remove the folder."""
        paths = [self.group_path(g) for g in range(self.num_groups)]
        file_meta = {b"fusmae_fast": json.dumps(metadata, sort_keys=True).encode()}
        if "geometry" in schema.names:
            file_meta[b"geo"] = json.dumps(geo_metadata(total_bbox(paths))).encode()
        tmp = self.folder / "assembled.parquet"
        with pq.ParquetWriter(tmp, schema.with_metadata(file_meta)) as writer:
            for path in paths:
                table = pq.read_table(path, schema=schema)
                writer.write_table(table, row_group_size=max(1, table.num_rows))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.out)
        shutil.rmtree(self.folder)
        return self.out


def total_bbox(paths: list[Path]) -> list[float] | None:
    """xmin, ymin, xmax, ymax over the ``bbox`` column of row group files (None when they hold no row)."""
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    for path in paths:
        box = pq.read_table(path, columns=["bbox"]).column("bbox").combine_chunks()
        if len(box):
            lo = np.minimum(lo, [box.field(f).to_numpy().min() for f in BBOX_FIELDS[:2]])
            hi = np.maximum(hi, [box.field(f).to_numpy().max() for f in BBOX_FIELDS[2:]])
    return [*lo.tolist(), *hi.tolist()] if np.isfinite(lo).all() else None
