"""``fusmae-fast embed``: GeoParquet from a v1 root with a real UTM georeference and from the built-in
sample; geometry checked against an independent pyproj transform; kill -9 and resume; bad input."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fusmae_fast import build_model, export_encoder, form_timing
from fusmae_fast.cli import main
from fusmae_fast.data import open_dataset
from fusmae_fast.data.synthetic import write_bigearthnet_v1

COUNTS = (10, 4, 4)
ROWS = sum(COUNTS)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A v1 root (written by the synthetic writer: UTM zones, 1200 m patches) and a tiny encoder."""
    root = tmp_path_factory.mktemp("embed")
    write_bigearthnet_v1(root / "v1", counts=COUNTS, seed=7, workers=1)
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    export_encoder(model, root / "encoder.safetensors")
    return root, model


def last_form(forms):
    """A stand-in for form_timing's timing that picks the same form in every process (the last name):
    the comparison of two runs then does not depend on which form a busy machine times fastest."""
    name = sorted(forms)[-1]
    return name, forms[name]()


@pytest.fixture(autouse=True)
def fixed_forms(monkeypatch):
    """Every test starts with no picks and picks by ``last_form``: tests here compare the files of two
    runs bit for bit, and picks by timing (or left by an earlier test of this process) would let a busy
    machine give two runs different forms, hence different rounding."""
    form_timing.set_form_timing(form_timing.form_timing_enabled())
    monkeypatch.setattr(form_timing, "_time_forms", last_form)
    yield
    form_timing.set_form_timing(form_timing.form_timing_enabled())


def _embed(world_root: Path, out: Path, *extra: str) -> int:
    args = ["embed", "--ckpt", str(world_root / "encoder.safetensors"), "--data", str(world_root / "v1")]
    args += ["--out", str(out), "--precision", "fp32", "--num_workers", "0", "--no-progress"]
    return main([*args, "--batch_size", "4", "--row_group_size", "6", *extra])


def test_v1_root_geoparquet(world, tmp_path):
    geopandas = pytest.importorskip("geopandas")
    pyproj = pytest.importorskip("pyproj")
    import rasterio

    root, model = world
    out = tmp_path / "emb.parquet"
    assert _embed(root, out) == 0
    assert not (tmp_path / "emb.parquet.partial").exists()

    df = geopandas.read_parquet(out)
    assert len(df) == ROWS
    assert {"name", "s1_name", "split", "labels", "embedding", "geometry"} <= set(df.columns)
    assert df.crs is not None and df.crs.equals(pyproj.CRS("OGC:CRS84"))
    assert list(df["split"]) == ["train"] * 10 + ["validation"] * 4 + ["test"] * 4

    table = pq.read_table(out)
    meta = pq.read_metadata(out)
    assert meta.num_row_groups == 3  # 18 rows, 6 per group
    geo = json.loads(meta.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert "crs" not in column  # absent = OGC:CRS84
    info = json.loads(meta.metadata[b"fusmae_fast"])
    weights = (root / "encoder.safetensors").read_bytes()
    assert info["checkpoint_sha256"] == hashlib.sha256(weights).hexdigest()
    assert info["model_config"]["embed_dim"] == 64 and info["pool"] == "cls" and info["inputs"] == "s1+s2"
    assert info["normalisation"]["s2_mean"][1] == pytest.approx(429.94)
    assert table.schema.field("embedding").type.list_size == 64

    # names, S1 names, labels and embeddings against the reader and the encoder run directly
    ds = open_dataset(root / "v1", split="validation")
    rows = df[df["split"] == "validation"]
    assert list(rows["name"]) == ds.names and list(rows["s1_name"]) == ds.s1_names
    for labels, y in zip(rows["labels"], ds.labels, strict=True):
        assert list(labels) == np.flatnonzero(y).tolist()
    batch = [ds[i] for i in range(len(ds))]
    with torch.no_grad():
        ref = model.encode(torch.stack([b["s1"] for b in batch]), torch.stack([b["s2"] for b in batch])).cls
    got = np.stack(rows["embedding"].to_numpy())
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-5)

    # geometry: the patch's GeoTIFF bounds transformed independently (pyproj), and the bbox covering
    for i in (0, 1, ROWS - 1):
        name = df["name"].iloc[i]
        with rasterio.open(root / "v1" / "BigEarthNet-v1.0" / name / f"{name}_B02.tif") as src:
            b, epsg = src.bounds, src.crs.to_epsg()
        assert 32601 <= epsg <= 32660  # a real UTM zone
        to_lonlat = pyproj.Transformer.from_crs(epsg, "OGC:CRS84", always_xy=True)
        corners = [(b.left, b.bottom), (b.right, b.bottom), (b.right, b.top), (b.left, b.top)]
        want = np.array([to_lonlat.transform(x, y) for x, y in corners])
        poly = df.geometry.iloc[i]
        assert poly.geom_type == "Polygon" and poly.exterior.is_ccw
        np.testing.assert_allclose(np.array(poly.exterior.coords)[:4], want, rtol=0, atol=1e-9)
        box = table.column("bbox")[i].as_py()
        assert [box["xmin"], box["ymin"], box["xmax"], box["ymax"]] == pytest.approx(list(poly.bounds))


def test_pretrained_folder_float16_mean_pool_single_modality(world, tmp_path):
    root, model = world
    model.save_pretrained(tmp_path / "pretrained", encoder_only=True)
    out = tmp_path / "s1.parquet"
    args = ["embed", "--ckpt", str(tmp_path / "pretrained"), "--data", str(root / "v1"), "--out", str(out)]
    args += [
        "--split",
        "test",
        "--inputs",
        "s1",
        "--pool",
        "mean",
        "--dtype",
        "float16",
        "--precision",
        "fp32",
    ]
    assert main([*args, "--num_workers", "0", "--no-progress"]) == 0
    table = pq.read_table(out)
    assert table.num_rows == COUNTS[2] and set(table.column("split").to_pylist()) == {"test"}
    assert str(table.schema.field("embedding").type.value_type) == "halffloat"
    ds = open_dataset(root / "v1", split="test")
    with torch.no_grad():
        ref = model.encode(torch.stack([ds[i]["s1"] for i in range(len(ds))]), None).pooled()
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    np.testing.assert_allclose(got, ref.numpy(), rtol=2e-3, atol=2e-3)
    info = json.loads(pq.read_metadata(out).metadata[b"fusmae_fast"])
    assert info["pool"] == "mean" and info["inputs"] == "s1" and info["dtype"] == "float16"


KILLER = """
import os, signal, sys
from fusmae_fast import form_timing
from fusmae_fast.embed import geoparquet
from fusmae_fast.cli import main

def last_form(forms):
    name = sorted(forms)[-1]
    return name, forms[name]()

form_timing._time_forms = last_form

written = []
original = geoparquet.PartialOutput.write_group

def write_then_die(self, group, table):
    original(self, group, table)
    written.append(group)
    if len(written) == 2:
        os.kill(os.getpid(), signal.SIGKILL)

geoparquet.PartialOutput.write_group = write_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_kill_and_resume_equals_uninterrupted(world, tmp_path, monkeypatch):
    """A killed run, continued, writes the file an uninterrupted run writes; the continuation computes
    with the forms the killed run picked (recorded in the partial folder), timing only what they do
    not cover."""
    root, _ = world
    whole = tmp_path / "whole.parquet"
    assert _embed(root, whole) == 0

    out = tmp_path / "resumed.parquet"
    args = ["embed", "--ckpt", str(root / "encoder.safetensors"), "--data", str(root / "v1")]
    args += ["--out", str(out), "--precision", "fp32", "--num_workers", "0", "--no-progress"]
    args += ["--batch_size", "4", "--row_group_size", "6"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLER), *args], env=env)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()
    partial = tmp_path / "resumed.parquet.partial"
    assert sorted(p.name for p in partial.glob("group-*.parquet")) == [
        "group-000000.parquet",
        "group-000001.parquet",
    ]

    recorded = json.loads((partial / "form_picks.json").read_text())
    assert recorded, "the killed run recorded no form picks: nothing of the resume is tested"
    timed: list[str] = []

    def timed_here(forms):
        timed.append(sorted(forms))
        return last_form(forms)

    form_timing.set_form_timing(form_timing.form_timing_enabled())  # forget this process's picks
    monkeypatch.setattr(form_timing, "_time_forms", timed_here)
    try:
        assert main(args) == 0  # the same command continues
        picks = {repr(k): v for k, v in form_timing.picks().items()}
    finally:
        form_timing.set_form_timing(form_timing.form_timing_enabled())
    assert all(picks[key] == name for key, name in recorded)  # the recorded keys ran their forms
    assert len(timed) == len(picks) - len(recorded)  # only keys the record lacks were timed
    assert not partial.exists()
    a, b = pq.read_table(whole), pq.read_table(out)
    assert a.equals(b)
    assert pq.read_metadata(out).num_row_groups == pq.read_metadata(whole).num_row_groups
    meta_a, meta_b = pq.read_metadata(whole).metadata, pq.read_metadata(out).metadata
    assert meta_a[b"geo"] == meta_b[b"geo"]


def test_builtin_sample(world, tmp_path):
    """The built-in sample (a store converted from the synthetic v1 layout) keeps its georeference."""
    geopandas = pytest.importorskip("geopandas")
    root, _ = world
    out = tmp_path / "sample.parquet"
    args = ["embed", "--ckpt", str(root / "encoder.safetensors"), "--data", "sample", "--out", str(out)]
    assert main([*args, "--split", "test", "--num_workers", "0", "--no-progress", "--precision", "fp32"]) == 0
    df = geopandas.read_parquet(out)
    ds = open_dataset("sample", split="test")
    assert len(df) == len(ds) and list(df["name"]) == ds.names
    assert list(df["s1_name"]) == ds.s1_names  # the store keeps the S1 names its convert was given
    assert all(n.startswith("S1") for n in ds.s1_names)
    bounds = np.array([ds.georeference(i).bounds for i in range(len(ds))])
    assert (bounds[:, 2] - bounds[:, 0] == 1200).all() and (bounds[:, 3] - bounds[:, 1] == 1200).all()
    assert df.geometry.is_valid.all() and (df.to_crs(ds.georeference(0).epsg).geometry.area > 1e6).all()


def test_store_gives_the_raw_roots_geometry(world, tmp_path, capsys):
    """A store converted from the v1 root gives the same names, S1 names, footprints and embeddings as the
    root; a store converted before stores kept georeference says to convert again, or --no-geometry;
    one converted before stores kept S1 names gives null S1 names, with one line saying so."""
    from fusmae_fast.data.packing import pack

    root, _ = world
    sources = [(s, open_dataset(root / "v1", split=s)) for s in ("train", "validation", "test")]
    pack(sources, tmp_path / "store", workers=0, progress=False)
    from_root, from_store = tmp_path / "root.parquet", tmp_path / "store.parquet"
    assert _embed(root, from_root) == 0
    ckpt = str(root / "encoder.safetensors")
    args = ["embed", "--ckpt", ckpt, "--data", str(tmp_path / "store"), "--out", str(from_store)]
    args += ["--precision", "fp32", "--num_workers", "0", "--no-progress", "--batch_size", "4"]
    assert main([*args, "--row_group_size", "6"]) == 0
    a, b = pq.read_table(from_root), pq.read_table(from_store)
    for column in ("name", "s1_name", "split", "labels", "embedding", "geometry", "bbox"):
        assert a.column(column).equals(b.column(column)), column
    assert None not in b.column("s1_name").to_pylist()

    index_path = tmp_path / "store" / "index.json"
    index = json.loads(index_path.read_text())
    del index["georeference"]  # as a convert before stores kept georeference wrote it
    index_path.write_text(json.dumps(index))
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "keeps no georeference" in err and "convert" in err and "--no-geometry" in err
    assert main([*args, "--overwrite", "--no-geometry"]) == 0
    plain = pq.read_table(from_store)
    assert "geometry" not in plain.column_names and b"geo" not in pq.read_metadata(from_store).metadata
    assert plain.column("embedding").equals(a.column("embedding"))
    assert plain.column("s1_name").equals(a.column("s1_name"))

    del index["s1_names"]  # as a convert before stores kept S1 names wrote it
    index_path.write_text(json.dumps(index))
    capsys.readouterr()
    assert main([*args, "--overwrite", "--no-geometry"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "S1 names" in line]
    assert len(notes) == 1 and "s1_name is null" in notes[0] and "convert it again" in notes[0], notes
    old = pq.read_table(from_store)
    assert old.column("s1_name").null_count == ROWS and old.column("name").equals(a.column("name"))
    assert old.column("embedding").equals(a.column("embedding"))


def test_bad_input_one_line_each(world, tmp_path, capsys):
    root, _ = world

    def error_of(*extra: str, out: Path = tmp_path / "bad.parquet") -> str:
        capsys.readouterr()
        assert _embed(root, out, *extra) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 2 and lines[1].startswith("(set FUSMAE_DEBUG=1"), lines
        return lines[0]

    # an existing output: refused without --overwrite; a corrupt one says so
    out = tmp_path / "done.parquet"
    assert _embed(root, out, "--split", "test") == 0
    assert "exists (4 rows); --overwrite replaces it" in error_of("--split", "test", out=out)
    out.write_bytes(out.read_bytes()[:100])
    assert "not a readable Parquet file" in error_of("--split", "test", out=out)
    assert _embed(root, out, "--split", "test", "--overwrite") == 0
    assert pq.read_metadata(out).num_rows == COUNTS[2]

    # an unfinished run of another command is not mixed in
    partial = tmp_path / "other.parquet.partial"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps({"pool": "mean"}))
    message = error_of("--split", "test", out=tmp_path / "other.parquet")
    assert "an unfinished run of another command" in message and "--overwrite" in message

    # a checkpoint of another architecture than the data
    torch.manual_seed(0)
    export_encoder(build_model("tiny", img_size=64), tmp_path / "small.safetensors")
    capsys.readouterr()
    args = ["embed", "--ckpt", str(tmp_path / "small.safetensors"), "--data", str(root / "v1")]
    assert main([*args, "--out", str(tmp_path / "x.parquet"), "--no-progress"]) == 2
    assert "takes 64x64 images, the train patches are 120x120" in capsys.readouterr().err

    # an unknown split is refused by the parser; the config says the same in one line
    with pytest.raises(SystemExit):
        _embed(root, tmp_path / "y.parquet", "--split", "training")
    from fusmae_fast.embed import EmbedConfig

    with pytest.raises(ValueError, match="EmbedConfig.split must be one of"):
        EmbedConfig(ckpt="x", out="y.parquet", split="training")
    assert "must end in .parquet" in error_of(out=tmp_path / "z.csv")


def _patch_file(ds, i: int) -> Path:
    """The GeoTIFF of row ``i``, located by the test from the documented layouts."""
    from fusmae_fast.data import BigEarthNetV2

    name = ds.names[i]
    if isinstance(ds, BigEarthNetV2):
        return ds.s2_dir / name.rsplit("_", 2)[0] / name / f"{name}_B02.tif"
    season, scene, _ = name.split("_s2_")[0], *name.split("_s2_")[1].split("_p")
    return next(ds.root.rglob(f"{season}/s2_{scene}/{name}.tif"))


@pytest.mark.parametrize("kind", ["bigearthnet-v2", "sen12ms"])
def test_v2_and_sen12ms_roots(world, tmp_path, kind):
    """reBEN and SEN12MS roots: footprints of the patches' own GeoTIFFs (SEN12MS: the centred 120x120
    window that the default centre crop keeps of the 256x256 patch), checked with pyproj."""
    pyproj = pytest.importorskip("pyproj")
    import rasterio
    import shapely

    from fusmae_fast.data.synthetic import write_bigearthnet_v2, write_sen12ms

    root, _ = world
    data = tmp_path / kind
    if kind == "sen12ms":
        write_sen12ms(data, counts=(2, 2, 2), seed=3, workers=1)
    else:
        write_bigearthnet_v2(data, counts=(2, 2, 2), seed=3, workers=1)
    out = tmp_path / "e.parquet"
    args = ["embed", "--ckpt", str(root / "encoder.safetensors"), "--data", str(data), "--out", str(out)]
    assert main([*args, "--split", "test", "--precision", "fp32", "--num_workers", "0", "--no-progress"]) == 0
    table = pq.read_table(out)
    ds = open_dataset(data, split="test")
    assert table.column("name").to_pylist() == ds.names and table.num_rows == 2
    assert table.column("s1_name").to_pylist() == list(
        ds.s1_names if kind != "sen12ms" else [n.replace("_s2_", "_s1_") for n in ds.names]
    )
    labels = table.column("labels").to_pylist()
    if kind == "sen12ms":
        assert labels == [[int(y)] for y in ds.labels]
    else:
        assert labels == [np.flatnonzero(y).tolist() for y in ds.labels]
    for i in range(table.num_rows):
        with rasterio.open(_patch_file(ds, i)) as src:
            t, h, epsg = src.transform, src.height, src.crs.to_epsg()
        lo, hi = ((h - 120) // 2, (h - 120) // 2 + 120) if kind == "sen12ms" else (0, h)
        corners = [(lo, hi), (hi, hi), (hi, lo), (lo, lo)]  # (col, row): ll, lr, ur, ul
        xy = [(t.c + t.a * c, t.f + t.e * r) for c, r in corners]
        to_lonlat = pyproj.Transformer.from_crs(epsg, "OGC:CRS84", always_xy=True)
        want = np.array([to_lonlat.transform(x, y) for x, y in xy])
        poly = shapely.from_wkb(table.column("geometry")[i].as_py())
        np.testing.assert_allclose(np.array(poly.exterior.coords)[:4], want, rtol=0, atol=1e-9)


def test_report_renders_the_embed_benchmark(tmp_path, monkeypatch):
    """bench/report.py puts every ``embed_*.json`` into docs/benchmarks.md, as bench/embed.py tables it."""
    from fusmae_fast.bench import devices, report
    from fusmae_fast.bench.embed import markdown

    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    measured = json.loads((devices.RESULTS / "embed_cpu.json").read_text())
    devices.write_json_atomic(results / "embed_cpu.json", measured)
    monkeypatch.setattr(devices, "REPO", tmp_path)
    monkeypatch.setattr(devices, "RESULTS", results)
    page = report.benchmarks_page(prefer_full=True)
    section = page.split("## Embedding export: `fusmae-fast embed` (measured)", 1)[1].split("\n## ", 1)[0]
    assert "From `bench/results/embed_cpu.json`." in section and markdown(measured) in section
    assert all(f"| {row['source']} | {row['precision']} |" in section for row in measured["rows"])
