"""Splits that leak or lose patches (issue 13 item 5), each reproduced through ``fusmae-fast convert``.

Every fault stops the convert with exit 2 and one error line naming the file and the patch (no
traceback, no store written); with ``--skip-bad`` the convert finishes, records each left-out patch
and why in the store's index, prints the count, and keeps every valid patch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from runs import in_process  # tests/faults is on sys.path under pytest

from fusmae_fast.data import BigEarthNetV1, BigEarthNetV2, DatasetError, open_dataset
from fusmae_fast.data.synthetic import write_bigearthnet_v1, write_bigearthnet_v2, write_sen12ms


def convert(fmt: str, root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``fusmae-fast convert`` as a user runs it (in this process: ``runs.in_process``)."""
    return in_process(
        ["convert", fmt, str(root), "--out", str(out), "--workers", "0", "--no-progress", *extra]
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed command (and check there is no traceback)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("fusmae-fast convert: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def store_names(out: Path) -> dict[str, list[str]]:
    return {
        s: open_dataset(out, s).names for s in json.loads((out / "index.json").read_text())["split_names"]
    }


def skipped_patches(out: Path) -> list[dict[str, str]]:
    return json.loads((out / "index.json").read_text())["skipped_patches"]


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small clean datasets of each format (v1 and v2: 4/1/1 patches, SEN12MS 8/2/2)."""
    base = tmp_path_factory.mktemp("split_faults")
    write_bigearthnet_v1(base / "v1", 6, seed=31)
    write_bigearthnet_v2(base / "v2", 6, seed=32)
    write_sen12ms(base / "sen", 12, seed=33)
    return {"v1": base / "v1", "v2": base / "v2", "sen": base / "sen"}


@pytest.fixture
def copy(templates: dict[str, Path], tmp_path: Path):
    def make(kind: str) -> Path:
        root = tmp_path / kind
        shutil.copytree(templates[kind], root)
        return root

    return make


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_v1_patch_in_train_and_val(copy, tmp_path: Path) -> None:
    root = copy("v1")
    train, val = _lines(root / "splits/train.csv"), _lines(root / "splits/val.csv")
    leaked = train[0]
    (root / "splits/val.csv").write_text("\n".join([*val, leaked]) + "\n")
    patch = leaked.split(",")[0]
    line = error_line(convert("bigearthnet-v1", root, tmp_path / "out"))
    assert patch in line and "val.csv" in line and "train.csv" in line and "two splits" in line
    assert not (tmp_path / "out" / "index.json").exists()

    ok = convert("bigearthnet-v1", root, tmp_path / "out", "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    assert "left out 1 bad patch(es)" in ok.stderr
    names = store_names(tmp_path / "out")
    assert names["train"] == [r.split(",")[0] for r in train[1:]]  # everything valid kept
    assert names["validation"] == [r.split(",")[0] for r in val]
    records = skipped_patches(tmp_path / "out")
    assert {(r["split"], r["patch"]) for r in records} == {("train", patch), ("validation", patch)}
    assert all("two splits" in r["reason"] for r in records)


def test_v1_duplicated_row(copy, tmp_path: Path) -> None:
    root = copy("v1")
    train = _lines(root / "splits/train.csv")
    (root / "splits/train.csv").write_text("\n".join([*train, train[1]]) + "\n")
    patch = train[1].split(",")[0]
    line = error_line(convert("bigearthnet-v1", root, tmp_path / "out"))
    assert patch in line and "train.csv" in line and "listed twice" in line

    ok = convert("bigearthnet-v1", root, tmp_path / "out", "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    assert store_names(tmp_path / "out")["train"] == [r.split(",")[0] for r in train]  # once each
    (record,) = skipped_patches(tmp_path / "out")
    assert record["patch"] == patch and record["split"] == "train" and "lines 2 and 5" in record["reason"]


def test_v1_empty_train_csv(copy, tmp_path: Path) -> None:
    root = copy("v1")
    (root / "splits/train.csv").write_text("")
    for extra in ((), ("--skip-bad",)):  # an empty list is never a patch to skip
        line = error_line(convert("bigearthnet-v1", root, tmp_path / "out", *extra))
        assert str(root / "splits/train.csv") in line and "lists no patch" in line
    assert not (tmp_path / "out" / "index.json").exists()


def test_v1_missing_band_file(copy, tmp_path: Path) -> None:
    root = copy("v1")
    patch = _lines(root / "splits/train.csv")[0].split(",")[0]
    band = root / "BigEarthNet-v1.0" / patch / f"{patch}_B05.tif"
    band.unlink()
    line = error_line(convert("bigearthnet-v1", root, tmp_path / "out"))
    assert str(band) in line and "missing file" in line
    # found while packing: the partial convert stays for a resume, so skip into a new folder
    ok = convert("bigearthnet-v1", root, tmp_path / "out2", "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    (record,) = skipped_patches(tmp_path / "out2")
    assert record == {"split": "train", "patch": patch, "file": str(band), "reason": "missing file"}
    assert len(store_names(tmp_path / "out2")["train"]) == 3


def test_sen12ms_empty_val_list(copy, tmp_path: Path) -> None:
    root = copy("sen")
    (root / "splits/val_list.txt").write_text("")
    line = error_line(convert("sen12ms", root, tmp_path / "out"))
    assert str(root / "splits/val_list.txt") in line and "lists no patch" in line
    assert not (tmp_path / "out" / "index.json").exists()


def test_sen12ms_missing_s2_file(copy, tmp_path: Path) -> None:
    root = copy("sen")
    clean = open_dataset(root, "train").names
    missing = sorted(root.glob("ROIs*/s2_*/*.tif"))[0]
    missing.unlink()
    patch = missing.stem
    line = error_line(convert("sen12ms", root, tmp_path / "out"))
    assert str(missing) in line and f"patch {patch}" in line and "missing file" in line

    ok = convert("sen12ms", root, tmp_path / "out", "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    assert "left out 1 bad patch(es)" in ok.stderr
    (record,) = skipped_patches(tmp_path / "out")
    assert record["patch"] == patch and record["file"] == str(missing) and record["reason"] == "missing file"
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["skipped"] == {"missing_file": 1}
    assert store_names(tmp_path / "out")["train"] == [n for n in clean if n != patch]


def test_sen12ms_patch_in_val_and_test_lists(copy, tmp_path: Path) -> None:
    root = copy("sen")
    test_list = _lines(root / "splits/test_list.txt")
    with open(root / "splits/val_list.txt", "a") as f:
        f.write(test_list[0] + "\n")
    patch = Path(test_list[0]).stem
    line = error_line(convert("sen12ms", root, tmp_path / "out"))
    assert patch in line and "val_list.txt" in line and "test_list.txt" in line and "two splits" in line

    ok = convert("sen12ms", root, tmp_path / "out", "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    names = store_names(tmp_path / "out")
    assert len(names["train"]) == 8 and len(names["validation"]) == 2 and len(names["test"]) == 1
    assert patch not in sum(names.values(), [])


def _add_v2_row(root: Path, row: int, split: str) -> str:
    """Append a copy of parquet row ``row`` with another ``split``; returns its patch id."""
    table = pq.read_table(root / "metadata.parquet")
    extra = table.slice(row, 1).to_pylist()[0] | {"split": split}
    table = pa.concat_tables([table, pa.Table.from_pylist([extra], schema=table.schema)])
    pq.write_table(table, root / "metadata.parquet")
    return extra["patch_id"]


def test_v2_patch_in_two_splits(copy, tmp_path: Path) -> None:
    root = copy("v2")
    clean = {s: BigEarthNetV2(root, s).names for s in ("train", "validation", "test")}
    patch = _add_v2_row(root, 0, "validation")
    line = error_line(convert("bigearthnet-v2", root, tmp_path / "out"))
    assert patch in line and "metadata.parquet" in line and "two splits" in line
    with pytest.raises(DatasetError, match=patch):  # read directly, too
        open_dataset(root, "validation")

    ok = convert("bigearthnet-v2", root, tmp_path / "out", "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    names = store_names(tmp_path / "out")
    assert names["train"] == [n for n in clean["train"] if n != patch]
    assert names["validation"] == clean["validation"] and names["test"] == clean["test"]
    assert {(r["split"], r["patch"]) for r in skipped_patches(tmp_path / "out")} == {
        ("train", patch),
        ("validation", patch),
    }


def test_v2_duplicated_row(copy, tmp_path: Path) -> None:
    root = copy("v2")
    clean = BigEarthNetV2(root, "train").names
    patch = _add_v2_row(root, 1, "train")
    line = error_line(convert("bigearthnet-v2", root, tmp_path / "out"))
    assert patch in line and "metadata.parquet" in line and "listed twice" in line

    ok = convert("bigearthnet-v2", root, tmp_path / "out", "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    assert store_names(tmp_path / "out")["train"] == clean


def test_pack_api_rejects_a_patch_in_two_split_files(copy, tmp_path: Path) -> None:
    """The check lives in ``pack`` too: split files chosen by hand cannot leak either."""
    from fusmae_fast.data.packing import pack

    root = copy("v1")
    train = _lines(root / "splits/train.csv")
    (tmp_path / "mine.csv").write_text("\n".join([*_lines(root / "splits/test.csv"), train[2]]) + "\n")
    s2, s1 = root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0"
    sources = [
        ("train", BigEarthNetV1(s2, s1, root / "splits/train.csv")),
        ("test", BigEarthNetV1(s2, s1, tmp_path / "mine.csv")),
    ]
    patch = train[2].split(",")[0]
    with pytest.raises(
        DatasetError, match=rf"mine\.csv: patch {patch}: in two splits: also in split 'train'"
    ):
        pack(sources, tmp_path / "out", workers=0, progress=False)
    index = pack(sources, tmp_path / "out", workers=2, chunk_size=1, progress=False, skip_bad=True)
    assert index["splits"] == {"train": 3, "test": 1}
    assert index["skipped"] == {"in_two_splits": 2}
    assert patch not in open_dataset(tmp_path / "out", "all").names
