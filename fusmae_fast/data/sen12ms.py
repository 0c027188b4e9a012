"""SEN12MS reader: S1 (2 bands), S2 (13 bands L1C, B10 dropped -> 12), simplified IGBP label.

Layout (as the mediaTUM tarballs extract; a per-tarball parent folder such as
``ROIs1158_spring_s1/ROIs1158_spring/...`` is found too)::

    ROIs1158_spring/s1_<scene>/ROIs1158_spring_s1_<scene>_p<n>.tif   2 bands float32 dB [VV, VH]
    ROIs1158_spring/s2_<scene>/ROIs1158_spring_s2_<scene>_p<n>.tif   13 bands uint16
    ROIs1158_spring/lc_<scene>/ROIs1158_spring_lc_<scene>_p<n>.tif   4 bands, IGBP first
    (seasons ROIs1158_spring, ROIs1868_summer, ROIs1970_fall, ROIs2017_winter), all 256x256.

Sample name: the S2 file stem (``ROIs1158_spring_s2_1_p30``), as in the official split lists.
Label: simplified IGBP class id 0..9 = argmax of the class histogram of the IGBP layer
(docs/design.md §5; ties -> lower id). Patches without a valid IGBP pixel are skipped and counted.
A patch is found by any of its files; one without the file of a modality read (or its land-cover
file) stops with an error naming that file (``skip_bad``: left out and recorded, see
:mod:`~fusmae_fast.data.bad_patches`).

Splits, in order of precedence:
1. ``split_file``: one entry a line: a file name or stem of any modality
   (``ROIs1158_spring_s2_1_p30.tif``) or a whole scene (``ROIs1158_spring/s1_63``).
2. ``<root>/splits/{train,val,test}_list.txt`` (the format of the SEN12MS repository's split lists,
   which ship ``val_list.txt`` and ``test_list.txt``). When any of them exists, they define the
   splits: train without a list is every patch in none of the others, validation or test without
   a list is empty (said on stderr). A patch in two lists is *in two splits* (an error; with
   ``skip_bad`` left out of both).
3. Otherwise a deterministic scene-level hash split: sha1 of ``<season>/<scene>`` -> u in [0, 1);
   u < 0.8 train, < 0.9 validation, else test (whole scenes stay together: no spatial leakage).

A split list that lists no patch is an error (an empty ``val_list.txt`` would otherwise move the
validation patches into train).

Images are 256x256; the item is fitted to ``image_size`` by centre crop by default (keeps the 10 m
pixel of pretraining; see :mod:`fusmae_fast.data.transforms`), or ``fit="resize"``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fusmae_fast.data.bad_patches import IN_TWO_SPLITS, MISSING_FILE, BadPatches
from fusmae_fast.data.bands import SEN12MS_IMAGE_SIZE, SEN12MS_S2_BANDS
from fusmae_fast.data.errors import DatasetError, MissingDataError
from fusmae_fast.data.geotiff import NanPolicy, check_nan_policy, gdal_env, read_georeference, read_geotiff
from fusmae_fast.data.labels import simplified_igbp_label
from fusmae_fast.data.raw_dataset import RawDataset, log_skipped, modalities_of, parallel_map
from fusmae_fast.data.raw_sample import SEN12MS_LAYOUT, DatasetInfo, Georeference, RawSample
from fusmae_fast.data.splits import canonical_split, check_not_empty, read_name_list
from fusmae_fast.data.transforms import Fit, ItemTransform

SEASON_RE = re.compile(r"^ROIs\d+_[a-z]+$")
SCENE_RE = re.compile(r"^(s1|s2|lc)_(\d+)$")
PATCH_RE = re.compile(r"^(ROIs\d+_[a-z]+)_(s1|s2|lc)_(\d+)_p(\d+)(\.tif)?$")
SCENE_ENTRY_RE = re.compile(r"^(ROIs\d+_[a-z]+)/(s1|s2|lc)_(\d+)/?$")
_KEEP_S2 = [i for i, b in enumerate(SEN12MS_S2_BANDS) if b != "B10"]
HASH_SPLIT = (0.8, 0.9)
Patch = tuple[str, int, int]
"""(season, scene number, patch number)."""


def _walk_scene_dirs(root: Path, depth: int = 3) -> Iterator[Path]:
    """Scene folders ``<season>/<mod>_<n>`` at most ``depth`` levels below ``root``."""
    if depth < 0 or not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        if SEASON_RE.match(child.name):
            for scene in sorted(child.iterdir()):
                if scene.is_dir() and SCENE_RE.match(scene.name):
                    yield scene
        else:
            yield from _walk_scene_dirs(child, depth - 1)


def find_scene_dirs(root: str | os.PathLike[str]) -> dict[tuple[str, str, int], Path]:
    """(season, modality, scene number) -> folder, for every scene folder under ``root``."""
    out: dict[tuple[str, str, int], Path] = {}
    for d in _walk_scene_dirs(Path(root)):
        mod, num = SCENE_RE.match(d.name).groups()  # type: ignore[union-attr]
        key = (d.parent.name, mod, int(num))
        if key in out:
            raise DatasetError(f"{root}: scene {d.parent.name}/{d.name} found twice ({out[key]} and {d})")
        out[key] = d
    return out


def is_sen12ms_root(path: str | os.PathLike[str]) -> bool:
    return any(True for _ in _walk_scene_dirs(Path(path)))


def hash_split(season: str, scene: int) -> str:
    """Deterministic scene-level split of the fallback rule (see module docstring)."""
    digest = hashlib.sha1(f"{season}/s1_{scene}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "train" if u < HASH_SPLIT[0] else "validation" if u < HASH_SPLIT[1] else "test"


class SEN12MS(RawDataset):
    """SEN12MS triplets with the simplified-IGBP single label.

    Args:
        root: folder holding the season folders.
        split_file: a split list (see module docstring); overrides ``split``.
        normalize: docs/design.md §5 (BigEarthNet) normalisation; False returns raw values.
        split: 'train' | 'validation' | 'test' | 'all' when no ``split_file`` is given.
        image_size, fit: output size and 'crop' (default) or 'resize'.
        nan_policy: 'error' or 'zero' for NaN/Inf pixels.
        bands: 'all', 's1' or 's2'.
        skip_bad: leave out patches with a missing file or in two split lists (each recorded in
            ``info.skipped_patches``) instead of stopping at the first.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split_file: str | os.PathLike[str] | None = None,
        normalize: bool = True,
        *,
        split: str = "all",
        image_size: int = 120,
        fit: Fit = "crop",
        nan_policy: NanPolicy = "error",
        bands: str = "all",
        skip_bad: bool = False,
    ) -> None:
        check_nan_policy(nan_policy)
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingDataError(f"{self.root}: SEN12MS root folder not found")
        self.modalities = modalities_of(bands)
        self.split = canonical_split(split)
        self.nan_policy = nan_policy
        self.transform = ItemTransform(image_size=image_size, normalize=normalize, fit=fit)
        self.layout = SEN12MS_LAYOUT
        self.scene_dirs = find_scene_dirs(self.root)
        if not self.scene_dirs:
            raise MissingDataError(f"{self.root}: no SEN12MS scene folders (ROIs*_<season>/s2_<n>) found")

        needed = (*self.modalities, "lc")
        found: dict[str, set[Patch]] = {mod: set() for mod in needed}
        for (season, mod, scene), folder in sorted(self.scene_dirs.items()):
            if mod not in found:
                continue
            for f in folder.iterdir():
                m = PATCH_RE.match(f.name)
                if m and f.suffix == ".tif" and m.group(2) == mod:
                    found[mod].add((season, scene, int(m.group(4))))
        patches = sorted(set().union(*found.values()))
        bad = BadPatches(skip_bad)
        split_source = "all"
        if split_file is not None:
            patches = self._select_listed(patches, Path(split_file))
            split_source = str(split_file)
        elif self.split != "all":
            patches, split_source = self._select_split(patches, bad)
        self.split_origin = split_source if split_source != "all" else f"every patch under {self.root}"
        complete = []
        for p in patches:
            absent = [mod for mod in needed if p not in found[mod]]
            if absent:
                bad.add(MISSING_FILE, self._name(p), str(self._expected_path(absent[0], *p)), "missing file")
            else:
                complete.append(p)
        patches = complete

        def label_of(p: tuple[str, int, int]) -> int:  # runs in a thread pool
            with gdal_env(quiet=False):
                lc = read_geotiff(
                    self._path("lc", *p), count=4, shape=(SEN12MS_IMAGE_SIZE,) * 2, dtype=np.uint16
                )
            return simplified_igbp_label(lc[0])

        labels = parallel_map(label_of, patches, "SEN12MS labels")
        skipped: dict[str, int] = {}
        keep = [i for i, y in enumerate(labels) if y >= 0]
        if len(keep) < len(patches):
            skipped["no_valid_igbp"] = len(patches) - len(keep)
            log_skipped("SEN12MS", skipped["no_valid_igbp"], "no IGBP label")
        self.patches = [patches[i] for i in keep]
        self.names = [self._name(p) for p in self.patches]
        self.labels = np.array([labels[i] for i in keep], dtype=np.int64)
        self.info = DatasetInfo(
            kind="sen12ms",
            source={
                "format": "sen12ms",
                "root": str(self.root),
                "split": self.split,
                "split_source": split_source,
                "nan_policy": nan_policy,
            },
            skipped=bad.merge_into(skipped),
            skipped_patches=bad.records,
        )

    @staticmethod
    def _name(p: Patch) -> str:
        """The sample name of a patch: its S2 file stem."""
        season, scene, n = p
        return f"{season}_s2_{scene}_p{n}"

    def _expected_path(self, mod: str, season: str, scene: int, n: int) -> Path:
        """Where the ``mod`` file of a patch should be (beside its other modalities' scene folders)."""
        folder = self.scene_dirs.get((season, mod, scene))
        if folder is None:
            sibling = next(d for (s, _, sc), d in self.scene_dirs.items() if (s, sc) == (season, scene))
            folder = sibling.parent / f"{mod}_{scene}"
        return folder / f"{season}_{mod}_{scene}_p{n}.tif"

    def _path(self, mod: str, season: str, scene: int, n: int) -> Path:
        folder = self.scene_dirs.get((season, mod, scene))
        if folder is None:
            raise MissingDataError(f"{self.root}: scene folder {season}/{mod}_{scene} not found")
        return folder / f"{season}_{mod}_{scene}_p{n}.tif"

    def _select_listed(self, patches: list[Patch], path: Path) -> list[Patch]:
        """The patches a split list names (patches or whole scenes); an empty list is an error."""
        wanted_patches: set[Patch] = set()
        wanted_scenes: set[tuple[str, int]] = set()
        entries = read_name_list(path)
        check_not_empty(path, entries)
        for line, entry in entries:
            if entry.endswith(".tif"):
                entry = Path(entry).name
            m, s = PATCH_RE.match(entry), SCENE_ENTRY_RE.match(entry)
            if m:
                wanted_patches.add((m.group(1), int(m.group(3)), int(m.group(4))))
            elif s:
                wanted_scenes.add((s.group(1), int(s.group(3))))
            else:
                raise DatasetError(f"{path}: line {line}: {entry!r} is not a SEN12MS patch or scene")
        have = set(patches)
        absent = sorted(wanted_patches - have)
        if absent:
            s, sc, n = absent[0]
            raise MissingDataError(
                f"{path}: {len(absent)} listed patch(es) not under {self.root} (first: {s}_s2_{sc}_p{n})"
            )
        return [p for p in patches if p in wanted_patches or (p[0], p[1]) in wanted_scenes]

    def _select_split(self, patches: list[Patch], bad: BadPatches) -> tuple[list[Patch], str]:
        """The patches of ``self.split`` by the split lists under ``splits/``, else the scene hash."""
        files = {s: self.root / "splits" / f"{s}_list.txt" for s in ("train", "val", "test")}
        lists = {s: f for s, f in files.items() if f.is_file()}
        if not lists:
            return [p for p in patches if hash_split(p[0], p[1]) == self.split], "scene hash 80/10/10"
        short = {"train": "train", "validation": "val", "test": "test"}[self.split]
        chosen = {s: set(self._select_listed(patches, f)) for s, f in lists.items()}
        leaked: set[Patch] = set()
        for a, b in itertools.combinations(chosen, 2):
            both = chosen[a] & chosen[b]
            if short in (a, b):
                for p in sorted(both - leaked):
                    bad.add(
                        IN_TWO_SPLITS, self._name(p), str(lists[b]), f"in two splits (also in {lists[a]})"
                    )
            leaked |= both
        if short in lists:
            return [p for p in patches if p in chosen[short] and p not in leaked], str(lists[short])
        if self.split == "train":
            held = set().union(*chosen.values())
            rest = " and ".join(str(f) for f in lists.values())
            return [p for p in patches if p not in held], f"all minus {rest}"
        print(
            f"[fusmae-fast] SEN12MS: no {files[short]} beside the other split lists: "
            f"the {self.split} split is empty",
            file=sys.stderr,
        )
        return [], f"no {files[short]}"

    def georeference(self, index: int) -> Georeference:
        """CRS and bounds of the patch's S2 file (of its S1 file when S2 is not read)."""
        mod = "s2" if "s2" in self.modalities else "s1"
        with gdal_env():
            return read_georeference(self._path(mod, *self.patches[index]))

    def read_raw(self, index: int) -> RawSample:
        season, scene, n = self.patches[index]
        size = (SEN12MS_IMAGE_SIZE, SEN12MS_IMAGE_SIZE)
        with gdal_env():
            s1 = (
                read_geotiff(
                    self._path("s1", season, scene, n),
                    count=2,
                    shape=size,
                    dtype=np.float32,
                    nan_policy=self.nan_policy,
                )
                if "s1" in self.modalities
                else None
            )
            s2 = (
                (
                    read_geotiff(self._path("s2", season, scene, n), count=13, shape=size, dtype=np.uint16)[
                        _KEEP_S2
                    ],
                )
                if "s2" in self.modalities
                else None
            )
        return RawSample(s1=s1, s2=s2, label=self.labels[index], name=self.names[index])
