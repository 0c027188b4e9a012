"""``EmbedConfig``: one embedding export (checkpoint, dataset, inputs, pooling, output file)."""

from __future__ import annotations

from dataclasses import dataclass

from fusmae_fast.config import KERNELS

SPLITS = ("train", "validation", "val", "test", "all")
INPUTS = ("s1+s2", "s1", "s2")
POOLS = ("cls", "mean")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = ("float32", "float16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class EmbedConfig:
    """``fusmae-fast embed``: every patch of a dataset through the encoder, one GeoParquet row each."""

    ckpt: str
    """encoder.safetensors, a training checkpoint (.pt), a run folder or a pretrained folder."""
    out: str
    """The GeoParquet file to write (its unfinished parts live in ``<out>.partial/`` until done)."""
    data: str = "sample"
    """Dataset root (BigEarthNet v1/v2, SEN12MS), packed store, or 'sample' / 'sample:sen12ms'."""
    split: str = "all"
    """'train', 'validation' ('val'), 'test' or 'all' (the three in that order)."""
    inputs: str = "s1+s2"
    """Modalities fed to the encoder: 's1+s2', or one alone (the model's missing-modality handling)."""
    pool: str = "cls"
    """The embedding: the 'cls' token, or the 'mean' of the patch tokens."""
    batch_size: int = 256
    """Patches per encoder call."""
    precision: str = "auto"
    """'fp32', 'bf16' or 'fp16' autocast; 'auto': bf16 where the device runs it natively, else fp16 on
    CUDA, fp32 on CPU."""
    kernels: str = "torch"
    """Op backend of the encoder."""
    num_workers: int = 2
    """DataLoader worker processes (reading overlaps the encoder)."""
    dtype: str = "float32"
    """Stored width of the embedding values: 'float32' or 'float16'."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu' or 'cuda'."""
    geometry: bool = True
    """Write each patch's footprint (from its GeoTIFF georeference); False writes no geometry column
    (a plain Parquet file, not GeoParquet)."""
    overwrite: bool = False
    """Replace an existing output file (and discard an unfinished run's parts)."""
    row_group_size: int = 2048
    """Rows per Parquet row group; a row group is the unit of work saved (and resumed)."""
    progress: bool = True
    """A tqdm progress bar on a TTY."""

    def __post_init__(self) -> None:
        for name, choices in (
            ("split", SPLITS),
            ("inputs", INPUTS),
            ("pool", POOLS),
            ("precision", PRECISIONS),
            ("kernels", KERNELS),
            ("dtype", DTYPES),
            ("device", DEVICES),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"EmbedConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("batch_size", "row_group_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"EmbedConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"EmbedConfig.num_workers must be >= 0, got {self.num_workers}")
        if not str(self.out).endswith(".parquet"):
            raise ValueError(f"--out {self.out}: the output file must end in .parquet")
