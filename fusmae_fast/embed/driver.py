"""``run_embed``: every patch of a dataset through the encoder, row group by row group, into GeoParquet.

Steps: load the encoder (``evaluate.encoder.load_model``: encoder.safetensors, a training checkpoint,
a run folder or a pretrained folder); open the split(s) with images brought to the model's size;
check that the checkpoint takes the data (channels, image size) and that the data has georeference;
list the rows (name, S1 name, split, labels are known before any image is read; a store keeps the
S1 names its convert was given); continue the
unfinished run of the same command or start one (``embed.geoparquet``); then for each row group not
yet written, its batches go through a DataLoader (workers read images and footprints while the
encoder runs: no masking, ``encode`` of the chosen modalities, autocast as ``--precision`` says) and
the group is written as soon as its last batch is done. Batches never cross a row group, so a resumed
run feeds the encoder exactly the batches an uninterrupted run does: same rows, same values.

The file's ``fusmae_fast`` metadata records the model config, the checkpoint and its SHA-256, the
pooling, the inputs, the normalisation and image fit, the precision, the kernels and the package
version.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fusmae_fast import form_timing
from fusmae_fast.config import ModelConfig
from fusmae_fast.data.bands import S1_BANDS, S1_MEAN, S1_STD, S2_BANDS, S2_MEAN, S2_STD
from fusmae_fast.data.errors import DatasetError
from fusmae_fast.data.packing import source_s1_names
from fusmae_fast.data.splits import canonical_split
from fusmae_fast.embed.config import EmbedConfig
from fusmae_fast.embed.footprint import RING_POINTS, check_georeferenced, footprint
from fusmae_fast.embed.geoparquet import PartialOutput, output_schema, rows_table
from fusmae_fast.evaluate.encoder import autocast, checkpoint_file, load_model, modalities, pooled_features
from fusmae_fast.model import FusMAE
from fusmae_fast.pretrained import WEIGHTS_NAME
from fusmae_fast.progress import progress_bar

ALL_SPLITS = ("train", "validation", "test")


class EmbedItems(Dataset):
    """The chosen modalities and the footprint of each row, over the split datasets end to end."""

    def __init__(self, parts: list[tuple[str, Dataset]], inputs: str, geometry: bool) -> None:
        self.parts = [ds for _, ds in parts]
        self.starts = np.cumsum([0] + [len(ds) for ds in self.parts]).tolist()  # type: ignore[arg-type]
        self.inputs = tuple(inputs.split("+"))
        self.geometry = geometry

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        k = bisect.bisect_right(self.starts, index) - 1
        ds, j = self.parts[k], index - self.starts[k]
        item = ds[j]
        out = {m: item[m] for m in self.inputs}
        if self.geometry:
            t, full = ds.transform, ds.layout.full_size  # type: ignore[attr-defined]
            crop = t.image_size if t.fit == "crop" else None
            ring = footprint(ds.georeference(j), full, crop, ds.names[j])  # type: ignore[attr-defined]
            out["footprint"] = torch.from_numpy(ring)
        return out


def open_splits(data: str, split: str, image_size: int) -> list[tuple[str, Dataset]]:
    """(split name, dataset) of ``split``, or of train, validation and test for 'all' (a split the
    data does not have is left out with a note; none at all is an error)."""
    from fusmae_fast.data import open_dataset

    split = canonical_split(split)
    if split != "all":
        return [(split, open_dataset(data, split=split, image_size=image_size))]
    parts, errors = [], []
    for name in ALL_SPLITS:
        try:
            parts.append((name, open_dataset(data, split=name, image_size=image_size)))
        except (DatasetError, ValueError) as exc:
            errors.append(exc)
            print(f"[fusmae-fast] embed: no {name} split ({exc})", file=sys.stderr)
    if not parts:
        raise errors[0]
    return parts


def check_architecture(config: ModelConfig, parts: list[tuple[str, Dataset]], ckpt: str) -> None:
    """The checkpoint must take the data: 2 S1 and 12 S2 channels, and the patches' own size unless
    the data is fitted by centre crop (a resize would change the pixel size the encoder learnt)."""
    if (config.s1_channels, config.s2_channels) != (len(S1_BANDS), len(S2_BANDS)):
        raise ValueError(
            f"{ckpt}: the checkpoint takes {config.s1_channels} S1 / {config.s2_channels} S2 channels, "
            f"the data has {len(S1_BANDS)} / {len(S2_BANDS)}"
        )
    for split, ds in parts:
        native, fit = ds.layout.full_size, ds.transform.fit  # type: ignore[attr-defined]
        if (fit == "resize" and native != config.img_size) or (fit == "crop" and native < config.img_size):
            raise ValueError(
                f"{ckpt}: the checkpoint takes {config.img_size}x{config.img_size} images, the {split} "
                f"patches are {native}x{native}; use a checkpoint trained at the data's size"
            )


def list_rows(parts: list[tuple[str, Dataset]]) -> dict[str, list[Any]]:
    """name, s1_name, split and labels of every row, from the datasets' indexes (no image read). Data
    that does not know its S1 names (a store converted before stores kept them) gets null ones, with
    one line saying so."""
    rows: dict[str, list[Any]] = {"name": [], "s1_name": [], "split": [], "labels": []}
    unnamed: list[str] = []
    for split, ds in parts:
        names = list(ds.names)  # type: ignore[attr-defined]
        labels = np.asarray(ds.labels)  # type: ignore[attr-defined]
        s1_names = source_s1_names(ds)  # type: ignore[arg-type]
        if s1_names is None:
            unnamed.append(str(getattr(ds, "root", split)))
        rows["name"] += names
        rows["s1_name"] += s1_names if s1_names is not None else [None] * len(names)
        rows["split"] += [split] * len(names)
        rows["labels"] += (
            [[int(y)] for y in labels] if labels.ndim == 1 else [np.flatnonzero(y).tolist() for y in labels]
        )
    if unnamed:
        print(
            f"[fusmae-fast] embed: {', '.join(dict.fromkeys(unnamed))} keeps no S1 names (converted "
            "before stores kept them): s1_name is null; convert it again (fusmae-fast convert --overwrite) "
            "to fill it",
            file=sys.stderr,
        )
    return rows


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def group_batches(groups: list[int], num_rows: int, group_size: int, batch_size: int) -> list[list[int]]:
    """The batches of the given row groups, in order; a batch never crosses a group boundary."""
    out = []
    for g in groups:
        stop = min((g + 1) * group_size, num_rows)
        out += [list(range(s, min(s + batch_size, stop))) for s in range(g * group_size, stop, batch_size)]
    return out


def embed_settings(
    cfg: EmbedConfig, model: FusMAE, ckpt: Path, parts: list[tuple[str, Dataset]], precision: str
) -> dict[str, Any]:
    """What made the embeddings: the file's ``fusmae_fast`` metadata (the run's fingerprint besides)."""
    from fusmae_fast import __version__

    t = parts[0][1].transform  # type: ignore[attr-defined]
    return {
        "package_version": __version__,
        "model_config": model.config.replace(kernels="torch").to_dict(),
        "checkpoint": str(Path(cfg.ckpt).resolve()),
        "checkpoint_sha256": file_sha256(ckpt / WEIGHTS_NAME if ckpt.is_dir() else ckpt),
        "data": str(Path(cfg.data).resolve()) if Path(cfg.data).exists() else str(cfg.data),
        "split": canonical_split(cfg.split),
        "inputs": cfg.inputs,
        "pool": cfg.pool,
        "dtype": cfg.dtype,
        "precision": precision,
        "kernels": cfg.kernels,
        "batch_size": cfg.batch_size,
        "row_group_size": cfg.row_group_size,
        "geometry": cfg.geometry,
        "embedding_width": model.config.embed_dim,
        "normalisation": {
            "normalize": bool(t.normalize),
            "image_size": int(t.image_size),
            "fit": t.fit,
            "s1_mean": [round(float(v), 4) for v in S1_MEAN],
            "s1_std": [round(float(v), 4) for v in S1_STD],
            "s2_mean": [round(float(v), 4) for v in S2_MEAN],
            "s2_std": [round(float(v), 4) for v in S2_STD],
        },
    }


def rows_digest(rows: dict[str, list[Any]]) -> str:
    """sha256 of the row list (names, splits, labels): a resumed run must see the same rows."""
    h = hashlib.sha256()
    for name, s1, split, labels in zip(*rows.values(), strict=True):
        h.update(f"{name}\t{s1}\t{split}\t{labels}\n".encode())
    return h.hexdigest()


def run_embed(cfg: EmbedConfig) -> dict[str, Any]:
    """Write (or finish) ``cfg.out``; returns a summary (rows, groups computed, seconds, images/s)."""
    from fusmae_fast.device import resolve_device, resolve_precision

    device = resolve_device(cfg.device, cfg.kernels)
    precision = resolve_precision(cfg.precision, device)
    ckpt = checkpoint_file(cfg.ckpt)
    model = load_model(cfg.ckpt).to(device).set_kernels(cfg.kernels).eval()
    parts = open_splits(cfg.data, cfg.split, model.config.img_size)
    check_architecture(model.config, parts, cfg.ckpt)
    if cfg.geometry:
        for _, ds in parts:
            check_georeferenced(ds)
    rows = list_rows(parts)
    num_rows = len(rows["name"])
    num_groups = math.ceil(num_rows / cfg.row_group_size)
    settings = embed_settings(cfg, model, ckpt, parts, precision)
    fingerprint = {**settings, "rows": num_rows, "rows_sha256": rows_digest(rows)}
    output = PartialOutput.open(cfg.out, fingerprint, num_groups, cfg.overwrite)
    done = set(output.finished_groups())
    if done:
        form_timing.restore_picks(output.recorded_picks())  # the killed run's forms, its rounding
        print(
            f"[fusmae-fast] embed: continuing {output.folder}: {len(done)} of {num_groups} row groups done",
            file=sys.stderr,
        )
    todo = [g for g in range(num_groups) if g not in done]
    schema = output_schema(model.config.embed_dim, cfg.dtype, cfg.geometry)
    t0 = time.perf_counter()
    computed = embed_groups(cfg, model, parts, rows, todo, output, schema, device, precision)
    seconds = time.perf_counter() - t0
    output.assemble(schema, {**settings, "rows": num_rows})
    rate = computed / seconds if seconds > 0 and computed else 0.0
    print(
        f"[fusmae-fast] embed: {num_rows} rows in {cfg.out} ({computed} computed in {seconds:.1f} s, "
        f"{rate:.1f} images/s on {device.type}, {precision})",
        file=sys.stderr,
    )
    return {"rows": num_rows, "computed": computed, "seconds": seconds, "images_per_second": rate}


@torch.no_grad()
def embed_groups(
    cfg: EmbedConfig,
    model: FusMAE,
    parts: list[tuple[str, Dataset]],
    rows: dict[str, list[Any]],
    todo: list[int],
    output: PartialOutput,
    schema: Any,
    device: torch.device,
    precision: str,
) -> int:
    """Compute and write the row groups ``todo``; returns the number of rows computed."""
    num_rows = len(rows["name"])
    size = cfg.row_group_size
    batches = group_batches(todo, num_rows, size, cfg.batch_size)
    if not batches:
        return 0
    loader = DataLoader(
        EmbedItems(parts, cfg.inputs, cfg.geometry),
        batch_sampler=batches,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    dtype = np.float16 if cfg.dtype == "float16" else np.float32
    feats: list[np.ndarray] = []
    rings: list[np.ndarray] = []
    computed = 0
    for indices, batch in zip(
        batches, progress_bar(loader, enabled=cfg.progress, desc="embed", total=len(batches)), strict=True
    ):
        s1, s2 = modalities(batch, cfg.inputs, device)
        with autocast(device, precision):
            f = pooled_features(model, s1, s2, cfg.pool)
        feats.append(f.float().cpu().numpy().astype(dtype))
        if cfg.geometry:
            rings.append(batch["footprint"].numpy().reshape(-1, RING_POINTS, 2))
        computed += len(indices)
        group = indices[-1] // size
        if indices[-1] + 1 == min((group + 1) * size, num_rows):
            lo, hi = group * size, indices[-1] + 1
            table = rows_table(
                schema,
                {k: v[lo:hi] for k, v in rows.items()},
                np.concatenate(feats),
                np.concatenate(rings) if cfg.geometry else None,
            )
            output.write_group(group, table)
            output.record_picks(form_timing.export_picks())
            feats, rings = [], []
    return computed
